#!/usr/bin/env bash
# The long form of ack_durability.sh (ctest label "long", not in the default
# run): the same kill -9 of the primary under acked_writer.py load, 20 seeds
# per mode (ACK_SEEDS overrides; HAST_TEST_SEED picks the first seed).
# fullsync and memsync must lose nothing acknowledged; async losses are
# measured and reported.
export ACK_SEEDS=${ACK_SEEDS:-20}
exec bash "$(dirname "$0")/ack_durability.sh" "$@"

#!/usr/bin/env bash
# lease_gates_reads.sh under the default `lease-lost io-error`: on the
# isolated old primary, reads after the lease ran out fail with EIO and
# never return the old data; the node steps down and drops its NBD clients
# (the list of what is asserted is at the top of lease_gates_reads.sh).
LEASE_LOST=io-error exec bash "$(dirname "$0")/lease_gates_reads.sh" "$@"

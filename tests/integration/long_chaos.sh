#!/usr/bin/env bash
# The chaos suite (ctest label "long"): seeded trials of single faults --
# kill -9, SIGSTOP/SIGCONT of either node, link cut, black hole and delay
# through lib/relay.py, the operator's failover -- against a hastd pair
# under acked_writer.py load. After every trial the final primary returns
# every acknowledged write (fullsync, memsync; async loss is counted), both
# data regions are byte-identical and no hastd is wedged. lib/chaos.py has the
# trial design; docs/RELIABILITY.md ("Chaos suite") the figures.
# Environment: CHAOS_TRIALS (default 120: 105 fullsync/memsync, 15 async),
# CHAOS_SEED (first seed, default 1), CHAOS_SUMMARY (JSON figures, default
# BUILD/chaos-summary.json), CHAOS_KEEP (logs of failing trials, default
# BUILD/chaos-failed). Replay one trial:
#   CHAOS_SEED=<seed> CHAOS_TRIALS=1 bash tests/integration/long_chaos.sh build
set -euo pipefail
BUILD=${1:?usage: long_chaos.sh BUILD_DIR}
exec python3 "$(dirname "$0")/lib/chaos.py" --build "$BUILD"

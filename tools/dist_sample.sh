#!/usr/bin/env bash
# Distributed sampling with torchrun, one process per device.
#   bash tools/dist_sample.sh CONFIG CHECKPOINT NUM_PROCS [sample.py options]
# Rerun the same command to resume: finished shards are kept. Multi-node: the
# output folder must be shared; environment as in tools/dist_launch.sh.
set -euo pipefail
exec bash "$(dirname "$0")/dist_launch.sh" sample.py "$3" "$1" "$2" "${@:4}"

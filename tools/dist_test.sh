#!/usr/bin/env bash
# Distributed testing with torchrun, one process per device.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options]
# Environment (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON): tools/dist_launch.sh.
set -euo pipefail
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"

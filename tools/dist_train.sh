#!/usr/bin/env bash
# Distributed training with torchrun, one process per device.
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options]
# Environment (NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON): tools/dist_launch.sh.
set -euo pipefail
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"

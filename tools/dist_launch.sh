#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh, dist_test.sh and dist_sample.sh:
#   bash tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT's arguments]
# starts NUM_PROCS processes of tools/SCRIPT with --launcher pytorch.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes use the gloo backend (the tools set it up).
set -euo pipefail

SCRIPT=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS_DIR="$(cd "$(dirname "$0")" && pwd)"

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/$SCRIPT" \
    "${@:3}" \
    --launcher pytorch

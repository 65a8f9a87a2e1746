# DeepSpeed ZeRO stage 2 through mmengine's FlexibleRunner (needs the
# optional `deepspeed` package: pip install -r requirements/optional.txt).
# Add this file to a config's `_base_` list and give the config a DeepSpeed
# optimizer wrapper, replacing the recipe's one (mixed precision and gradient
# clipping are DeepSpeed settings here, not optimizer-wrapper ones):
#
#   optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper',
#                        optimizer=dict(type='AdamW', lr=..., ...))
#   strategy = dict(train_micro_batch_size_per_gpu=<train batch size>)
#
# then launch as usual (tools/dist_train.sh CONFIG NUM_GPUS). Stage 2 shards
# the optimizer states and gradients over the ranks, keeping a full replica of
# the parameters (stage=1: optimizer states only; deepspeed_zero3.py also
# shards the parameters). zero_allow_untested_optimizer lets ZeRO shard a
# torch optimizer (AdamW, SGD) instead of DeepSpeed's own fused ones, which
# need CUDA. The checkpoint is a DeepSpeed directory (`iter_N.pth/` with the
# model states and one optimizer shard per rank) that resumes with --resume;
# see the README section "Choosing DDP, FSDP or DeepSpeed".
#
# Without CUDA, DeepSpeed picks its CPU accelerator and tools/train.py runs
# this with gloo (visionllama_mm.CPUDeepSpeedOptimWrapper).
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(stage=2),
    config=dict(zero_allow_untested_optimizer=True))

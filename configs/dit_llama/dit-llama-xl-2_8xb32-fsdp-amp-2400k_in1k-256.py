# DiT-LLaMA-XL/2 on ImageNet 256 latents, sharded with FSDP: the recipe of
# dit-llama-xl-2_8xb32-2400k_in1k-256.py (same data, schedule, lr and EMA)
# with the network, gradients and AdamW states sharded over the ranks (one
# FSDP unit per LLaMABlock), bf16 autocast and activation checkpointing of
# every block.
#
# EMA: mmengine's EMAHook deep-copies the model, which FSDP-wrapped modules
# do not support; visionllama_mm.FSDPEMAHook keeps the same average (decay
# 0.9999) on each rank's shard of the parameters, and the checkpoints hold
# the full average in `state_dict` (what sampling and tools/test.py load)
# and the trained weights in `ema_state_dict`, as with EMAHook.
#
# Launch: tools/dist_train.sh <this config> 8
_base_ = [
    './dit-llama-xl-2_8xb32-2400k_in1k-256.py',
    '../_base_/strategies/fsdp_checkpointing.py',
]

custom_hooks = [
    dict(
        type='visionllama_mm.FSDPEMAHook',
        ema_type='ExponentialMovingAverage',
        momentum=1e-4,  # decay 0.9999
        priority='ABOVE_NORMAL')
]
optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')

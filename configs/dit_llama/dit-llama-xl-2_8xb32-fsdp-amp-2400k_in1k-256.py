# DiT-LLaMA-XL/2 on ImageNet 256 latents, sharded with FSDP: the recipe of
# dit-llama-xl-2_8xb32-2400k_in1k-256.py (same data, schedule and lr) with
# the network, gradients and AdamW states sharded over the ranks (one FSDP
# unit per LLaMABlock), bf16 autocast and activation checkpointing of every
# block.
#
# Limitation: mmengine's EMAHook deep-copies the model, which FSDP-wrapped
# modules do not support, so this recipe trains WITHOUT the EMA of the
# replicated recipe (its checkpoints hold the raw weights, which sample
# worse than an EMA). Train with the replicated recipe when the EMA matters;
# the 675M-parameter model fits a replica on 40 GB GPUs.
#
# Launch: tools/dist_train.sh <this config> 8
_base_ = [
    './dit-llama-xl-2_8xb32-2400k_in1k-256.py',
    '../_base_/strategies/fsdp_checkpointing.py',
]

custom_hooks = []
optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')

# FSDP for the large models: fsdp.py plus activation checkpointing. Every
# block recomputes its activations in the backward pass (the same blocks that
# are the FSDP units), for about a third more compute and activation memory
# that no longer grows with depth.
#
# Mixed precision: the configs that use this train with AmpOptimWrapper
# (autocast) in bfloat16; under FSDP, mmengine switches its gradient scaler
# to the sharded one. The sharded master weights, gradients and AdamW states
# stay float32.
_base_ = ['./fsdp.py']

strategy = dict(
    activation_checkpointing=dict(check_fn='visionllama_mm.is_llama_block'))

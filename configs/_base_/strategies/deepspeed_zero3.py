# DeepSpeed ZeRO stage 3: deepspeed_zero2.py plus the parameters sharded over
# the ranks (gathered layer by layer in forward and backward, as FSDP does).
# gather_16bit_weights_on_model_save: a CheckpointHook with
# save_optimizer=False then writes one file of consolidated weights.
_base_ = ['./deepspeed_zero2.py']

strategy = dict(
    zero_optimization=dict(stage=3, gather_16bit_weights_on_model_save=True))

# MAE pretraining of VisionLLaMA-L/16 on ImageNet-1k, 800 epochs, sharded
# with FSDP: the recipe of mae_visionllama-large-p16_8xb256-amp-coslr-800e_
# in1k.py (same data, schedule, lr and batch) with the model, gradients and
# AdamW states sharded over the ranks (one FSDP unit per encoder and decoder
# block), bf16 autocast and activation checkpointing of every block. Use it
# when the replicated recipe does not fit (smaller GPUs, a larger batch per
# GPU); it trains the same model.
#
# Launch: tools/dist_train.sh <this config> 8
_base_ = [
    './mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k.py',
    '../_base_/strategies/fsdp_checkpointing.py',
]

optim_wrapper = dict(dtype='bfloat16')

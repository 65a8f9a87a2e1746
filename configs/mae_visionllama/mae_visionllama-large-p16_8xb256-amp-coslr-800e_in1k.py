# MAE pretraining of VisionLLaMA-L/16 on ImageNet-1k, 800 epochs.
#
# Official recipe (docs/visionllama.md#mae-pretraining-recipe; upstream
# `mae_lama-large-p16_8xb512-amp-coslr-800e_in1k.py`, whose name says 8xb512
# although it trains with 256 images per GPU): the base 800-epoch recipe with
# `arch='l'`, the decoder fed 1024-d latents (it stays 512-d inside) and a
# batch of 256 x 8 = 2048. The lr is NOT rescaled for the halved batch: it
# stays 1.5e-4 * 4096 / 256 = 2.4e-3 (`auto_scale_lr` with base 4096 only
# acts with `--auto-scale-lr`). The official run keeps 2 checkpoints.
_base_ = './mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py'

model = dict(backbone=dict(arch='l'), neck=dict(embed_dim=1024))

train_dataloader = dict(batch_size=256)

default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))

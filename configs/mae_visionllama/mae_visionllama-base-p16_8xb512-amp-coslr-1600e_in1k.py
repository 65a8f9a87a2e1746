# MAE pretraining of VisionLLaMA-B/16 on ImageNet-1k, 1600 epochs.
#
# Official recipe (docs/visionllama.md#mae-pretraining-recipe; upstream
# `mae_lama-base-p16_8xb512-amp-coslr-1600e_in1k.py`): the 800-epoch config
# with mmpretrain's MAE ViT-B 1600e schedule: the LinearLR warmup (40 epochs)
# starts from 1e-4 and the cosine runs to epoch 1600.
_base_ = './mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py'

param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-4),
    dict(_base_.param_scheduler[1], T_max=1560, end=1600),
]
train_cfg = dict(max_epochs=1600)

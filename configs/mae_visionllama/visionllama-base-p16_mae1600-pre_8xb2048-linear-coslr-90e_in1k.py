# Linear probe of the 1600-epoch MAE VisionLLaMA-B/16 encoder on ImageNet-1k.
#
# Official recipe (spec-visionllama.md §8.3; upstream
# `lama-base-p16_8xb2048-linear-coslr-1600-90e_in1k.py`): identical to the
# 800-epoch linear probe; only the starting checkpoint differs.
_base_ = './visionllama-base-p16_mae800-pre_8xb2048-linear-coslr-90e_in1k.py'

mae_checkpoint = 'checkpoints/mae_visionllama-base-p16_1600e.pth'

model = dict(backbone=dict(init_cfg=dict(checkpoint=mae_checkpoint)))

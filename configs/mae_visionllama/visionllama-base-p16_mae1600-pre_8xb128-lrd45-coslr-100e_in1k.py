# Fine-tune VisionLLaMA-B/16 on ImageNet-1k from the 1600-epoch MAE encoder.
#
# Official recipe (spec-visionllama.md §8.2; upstream
# `lama-base-p16_8xb128-coslr-1600-lrd45-100e_in1k.py`): identical to the
# 800-epoch fine-tune; only the starting checkpoint differs.
_base_ = './visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py'

mae_checkpoint = 'checkpoints/mae_visionllama-base-p16_1600e.pth'

model = dict(backbone=dict(init_cfg=dict(checkpoint=mae_checkpoint)))

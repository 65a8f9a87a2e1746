# Linear probing of the VisionLLaMA-L MAE 800-epoch encoder
# (docs/visionllama.md#linear-probe-recipe; upstream
# lama-large-p16_8xb2048-linear-coslr-800-90e_in1k.py).
_base_ = ['./visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py']

# HF mtgv/VisionLLaMA-Large-MAE/epoch_800.pth, converted with
# tools/model_converters/visionllama_to_mmpretrain.py
pretrained = 'checkpoints/visionllama-large-p16_mae-800e_in1k.pth'

model = dict(
    backbone=dict(
        arch='large', frozen_stages=24, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(input_features=1024),
    head=dict(in_channels=1024))

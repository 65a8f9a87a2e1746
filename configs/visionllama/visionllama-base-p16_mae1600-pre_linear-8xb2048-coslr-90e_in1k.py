# Linear probing of the VisionLLaMA-B MAE 1600-epoch encoder
# (docs/visionllama.md#linear-probe-recipe; upstream
# lama-base-p16_8xb2048-linear-coslr-1600-90e_in1k.py).
_base_ = ['./visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py']

# HF mtgv/VisionLLaMA-Base-MAE/epoch_1600.pth, converted with
# tools/model_converters/visionllama_to_mmpretrain.py
pretrained = 'checkpoints/visionllama-base-p16_mae-1600e_in1k.pth'

model = dict(backbone=dict(init_cfg=dict(checkpoint=pretrained)))

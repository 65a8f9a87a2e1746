# ImageNet-1k fine-tuning of VisionLLaMA-B from the MAE 1600-epoch encoder
# (upstream lama-base-p16_8xb128-coslr-1600-lrd45-100e_in1k.py): the
# 800-epoch recipe with the other encoder.
_base_ = ['./visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py']

# HF mtgv/VisionLLaMA-Base-MAE/epoch_1600.pth, converted with
# tools/model_converters/visionllama_to_mmpretrain.py
pretrained = 'checkpoints/visionllama-base-p16_mae-1600e_in1k.pth'

model = dict(backbone=dict(init_cfg=dict(checkpoint=pretrained)))

# Pyramid VisionLLaMA-B, ImageNet-1k, 300 epochs.
_base_ = ['pyramid-visionllama-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3), head=dict(in_channels=768))

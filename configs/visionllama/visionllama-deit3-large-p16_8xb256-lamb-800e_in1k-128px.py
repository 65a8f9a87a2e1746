# Supervised DeiT-III training of the deit-style plain VisionLLaMA-L at
# 128 px (spec-visionllama.md §8.4; upstream vit_llama_rope_large_patch16:
# LAMB lr 3e-3, drop path 0.45, 800 epochs, evaluated at 128 px), fine-tuned
# at 224 px afterwards with
# visionllama-deit3-large-p16_deit3-128px-pre_8xb64-adamw-20e_in1k.py.
_base_ = ['./visionllama-deit3-small-p16_8xb256-lamb-800e_in1k.py']

img_size = 128

# DeiT-III "3-Augment": random resized crop + flip, then one of grayscale,
# solarization and Gaussian blur, then color jitter
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='mmcv.RandomChoice',
        transforms=[
            [
                dict(
                    type='mmpretrain.RandomGrayscale',
                    prob=1.0,
                    keep_channels=True)
            ],
            [dict(type='mmpretrain.Solarize', thr=128, prob=1.0)],
            [
                # radius ~ U(0.1, 2.0)
                dict(
                    type='mmpretrain.GaussianBlur',
                    magnitude_range=(0.1, 2.0),
                    magnitude_level=10,
                    total_level=10,
                    magnitude_std='inf',
                    prob=1.0)
            ],
        ]),
    dict(type='ColorJitter', brightness=0.3, contrast=0.3, saturation=0.3),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=img_size,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    backbone=dict(arch='large', img_size=img_size, drop_path_rate=0.45),
    head=dict(in_channels=1024))
optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6 / 3e-3,
        by_epoch=True,
        begin=0,
        end=5),
    dict(
        type='CosineAnnealingLR',
        T_max=795,
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=800),
]

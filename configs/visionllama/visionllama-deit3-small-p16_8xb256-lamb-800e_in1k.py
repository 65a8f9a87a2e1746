# Supervised DeiT-III training of the deit-style plain VisionLLaMA-S on
# ImageNet-1k at 224 px (spec-visionllama.md §4, §8.4; upstream
# ImageNet1k_SFT.md: deit/main_b.py vit_llama_rope_small_patch16, 8 x 256
# images, LAMB lr 4e-3 (not rescaled), wd 0.05, 5 warm-up epochs, cosine to
# 800 epochs, BCE loss, repeated augmentation, ThreeAugment, color jitter
# 0.3, Mixup 0.8 / CutMix 1.0, drop path 0.05, no label smoothing, no random
# erasing, evaluation at crop ratio 1.0). The weights were not released.
#
# Differences from the deit scripts: the BCE loss takes the mixed soft
# targets as they are (DeiT-III binarises them, targets > 0), and timm's
# 10 cool-down epochs are not run.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/datasets/imagenet_deit3.py',
    '../_base_/models/visionllama-deit3.py',
]

img_size = 224  # training resolution (B: 192, L: 128)

# ---------------------------------------------------------------- data
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
train_dataloader = dict(
    batch_size=256,
    dataset=dict(pipeline=train_pipeline),
    sampler=dict(type='RepeatAugSampler'),
)
val_dataloader = dict(batch_size=384)
test_dataloader = val_dataloader

# ---------------------------------------------------------------- model
model = dict(
    backbone=dict(arch='small', img_size=img_size, drop_path_rate=0.05),
    head=dict(
        in_channels=384, loss=dict(type='CrossEntropyLoss', use_sigmoid=True)))

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=4e-3, weight_decay=0.05, eps=1e-8))
param_scheduler = [
    # warm-up from --warmup-lr 1e-6, per epoch as timm
    dict(
        type='LinearLR',
        start_factor=1e-6 / 4e-3,
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
train_cfg = dict(by_epoch=True, max_epochs=800, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=2048)

default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2))
randomness = dict(seed=0, diff_rank_seed=True)

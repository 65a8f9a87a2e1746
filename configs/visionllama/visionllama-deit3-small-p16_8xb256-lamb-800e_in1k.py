# Supervised DeiT-III training of the deit-style plain VisionLLaMA-S on
# ImageNet-1k at 224 px (upstream ImageNet1k_SFT.md: deit/main_b.py with
# engine_b.py, vit_llama_rope_small_patch16, 8 x 256 images, LAMB lr 4e-3
# (not rescaled), wd 0.05, 5 warm-up epochs from 1e-6, timm cosine to 1e-5
# over 800 epochs stepped per epoch, BCE on the binarised Mixup 0.8 /
# CutMix 1.0 targets, repeated augmentation, ThreeAugment, color jitter 0.3,
# drop path 0.05, no label smoothing, no random erasing, bf16 autocast,
# evaluation resize 256 / centre crop 224). The weights were not released.
# timm's 10 cool-down epochs are never trained by the deit script either.
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
    sampler=dict(type='RepeatAugSampler', seed=0),  # deit RASampler
)
val_dataloader = dict(batch_size=384)
test_dataloader = val_dataloader

# ---------------------------------------------------------------- model
model = dict(
    backbone=dict(arch='small', img_size=img_size, drop_path_rate=0.05),
    head=dict(
        in_channels=384,
        # --bce-loss: BCEWithLogitsLoss on targets.gt(0.0)
        loss=dict(type='visionllama_mm.BinarizedBCELoss')))

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=4e-3, weight_decay=0.05, eps=1e-8))
# timm CosineLRScheduler stepped with step(epoch) after each epoch: the lr
# is constant within an epoch and lags the schedule by one epoch
param_scheduler = [
    dict(
        type='visionllama_mm.TimmCosineLR',
        t_initial=800,
        warmup_t=5,
        warmup_lr_init=1e-6,
        lr_min=1e-5,
        lag=1,
        by_epoch=True)
]
train_cfg = dict(by_epoch=True, max_epochs=800, val_interval=1)
# the deit evaluate() runs under fp16 autocast
val_cfg = dict(fp16=True)
test_cfg = dict(fp16=True)
auto_scale_lr = dict(base_batch_size=2048)

default_hooks = dict(
    # the deit script evaluates every epoch and reports the best top-1
    checkpoint=dict(
        type='CheckpointHook',
        interval=10,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)

# Fine-tuning at 224 px of the deit-style VisionLLaMA-B trained at 192 px
# (upstream ImageNet1k_SFT.md: deit/main_b.py, AdamW lr 1e-5 (not
# rescaled), wd 0.1, 20 epochs with 5 warm-up epochs from 1e-6 and the timm
# cosine to 1e-5 stepped per epoch, 8 x 64 images, label smoothing 0.1,
# RandAugment rand-m9-mstd0.5-inc1, no random erasing, no repeated
# augmentation, Mixup 0.8 / CutMix 1.0, drop path 0.2, bf16 autocast,
# evaluation resize 256 / centre crop 224).
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/datasets/imagenet_deit3.py',
    '../_base_/models/visionllama-deit3.py',
]

# the 192 px DeiT-III model trained with
# visionllama-deit3-base-p16_8xb256-lamb-800e_in1k-192px.py (its last
# checkpoint; mmpretrain layout, or a deit file converted with
# tools/model_converters/visionllama_to_mmpretrain.py --layout mmpretrain)
pretrained = 'work_dirs/visionllama-deit3-base-p16_8xb256-lamb-800e_in1k-192px/epoch_800.pth'  # noqa: E501
erase_prob = 0.

bgr_std = _base_.data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in _base_.bgr_mean],
            interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=erase_prob,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=_base_.bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=96)
test_dataloader = val_dataloader

model = dict(
    backbone=dict(arch='base', img_size=224, drop_path_rate=0.2),
    head=dict(
        in_channels=768,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    init_cfg=dict(type='Pretrained', checkpoint=pretrained))

optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=1e-5, weight_decay=0.1, eps=1e-8, betas=(0.9, 0.999)))
# timm CosineLRScheduler stepped with step(epoch) after each epoch (one
# epoch lag); with lr 1e-5 = min lr the cosine part is flat
param_scheduler = [
    dict(
        type='visionllama_mm.TimmCosineLR',
        t_initial=20,
        warmup_t=5,
        warmup_lr_init=1e-6,
        lr_min=1e-5,
        lag=1,
        by_epoch=True)
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=1)
# the deit evaluate() runs under fp16 autocast
val_cfg = dict(fp16=True)
test_cfg = dict(fp16=True)
auto_scale_lr = dict(base_batch_size=512)

default_hooks = dict(
    # the deit script evaluates every epoch and reports the best top-1
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'))
randomness = dict(seed=0, diff_rank_seed=True)

# Pyramid VisionLLaMA-S, ImageNet-1k, 300 epochs, 8 GPUs x 128 images: the
# released recipe (upstream ImageNet1k_SFT.md: deit/main.py with engine.py,
# the DeiT v1 defaults). The deit engine always autocasts (bf16 where the
# GPU supports it) with a GradScaler and skips iterations whose loss is not
# finite on some rank; both are set here (no `--amp` needed).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

# model settings: the deit classifier (GAP with the double final norm)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='visionllama_mm.PyramidVisionLLaMA',
        arch='small',
        out_type='avg_featmap',
        final_norm=True,
        head_double_norm=True,
        gsa_key_pos='official',
        auto_scale=False,
        drop_path_rate=0.2),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# data: RandAugment rand-m9-mstd0.5-inc1, RandomErasing 0.25, no repeated
# augmentation; evaluation resize 256 -> center crop 224 (bicubic)
train_dataloader = dict(
    batch_size=128,
    drop_last=True,
    # seed 0 on every rank, as the deit DistributedSampler
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0))

# optimizer: AdamW lr 5e-4 * 1024 / 512, wd 0.05 except 1-D parameters and
# biases (norms, layer scales), as timm's optimizer factory does for DeiT
optim_wrapper = dict(
    type='visionllama_mm.SkipNonFiniteAmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(
        type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0),
)

# schedule: timm CosineLRScheduler (5 warm-up epochs from 1e-6, cosine to
# 1e-5 over 300 epochs counted from epoch 0) stepped with step(epoch) after
# each epoch: constant within an epoch, one epoch behind
param_scheduler = [
    dict(
        type='visionllama_mm.TimmCosineLR',
        t_initial=300,
        warmup_t=5,
        warmup_lr_init=1e-6,
        lr_min=1e-5,
        lag=1,
        by_epoch=True)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
# the deit evaluate() runs under fp16 autocast
val_cfg = dict(fp16=True)
test_cfg = dict(fp16=True)
auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
randomness = dict(seed=0, diff_rank_seed=True)

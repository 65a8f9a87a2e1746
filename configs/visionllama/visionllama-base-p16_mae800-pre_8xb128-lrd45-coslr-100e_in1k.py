# ImageNet-1k fine-tuning of VisionLLaMA-B from the MAE 800-epoch encoder
# (upstream
# mmpretrain/configs/mae/benchmarks/lama-base-p16_8xb128-coslr-800-lrd45-100e_in1k.py).
# 8 GPUs x 128 images, AdamW lr 2e-3, layer-wise lr decay 0.45, 100 epochs;
# the official runs used `--amp` (PRETRAIN.md), which this config sets:
# fp16 autocast with a dynamic loss scale.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

# The MAE encoder: the HF file mtgv/VisionLLaMA-Base-MAE/epoch_800.pth
# converted with tools/model_converters/visionllama_to_mmpretrain.py (or an
# epoch file of configs/visionllama/mae converted the same way).
pretrained = 'checkpoints/visionllama-base-p16_mae-800e_in1k.pth'

# dataset settings: the base's swin-style augmentation (RandAugment,
# random erasing 0.25, Mixup / CutMix below), evaluation at crop ratio 0.875
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# model settings
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='visionllama_mm.VisionLLaMA',
        arch='base',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# optimizer wrapper: what mmpretrain's tools/train.py --amp sets, layer-wise
# lr decay through VisionLLaMA.get_layer_depth
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=2e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.45,
        custom_keys={
            '.ln': dict(decay_mult=0.0),
            '.bias': dict(decay_mult=0.0),
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))

# learning rate scheduler
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=95,
        by_epoch=True,
        begin=5,
        end=100,
        eta_min=1e-6,
        convert_to_iter_based=True)
]

# runtime settings
train_cfg = dict(by_epoch=True, max_epochs=100)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
randomness = dict(seed=0, diff_rank_seed=True)

# Quick start / end-to-end test: ViTDet Mask R-CNN with a tiny plain
# VisionLLaMA (LLaMADET: window blocks 0 and 2 with window-local RoPE,
# global blocks 1 and 3), SimpleFPN and LN2d heads, LSJ at 256, layer-wise
# lr decay and the fp16 compression hook (a logged no-op without DDP), on
# the real nuclei image of the stardist wheel (prepare it with
# `python tools/dataset_converters/prepare_nuclei.py`). CPU-sized, fp32.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/nuclei_instance.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/schedules/nuclei_1k_iters.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading', 'visionllama_mm.necks'],
    allow_failed_imports=False)

embed_dims = 64
channels = 64
norm_cfg = dict(type='LN2d', requires_grad=True)
image_size = (256, 256)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.LLaMADET',
        arch=dict(embed_dims=embed_dims, num_layers=4, num_heads=4),
        img_size=256,
        patch_size=16,
        drop_path_rate=0.1,
        window_size=7,
        window_block_indexes=[0, 2]),
    neck=dict(
        _delete_=True,
        type='visionllama_mm.SimpleFPN',
        backbone_channel=embed_dims,
        in_channels=[embed_dims // 4, embed_dims // 2, embed_dims, embed_dims],
        out_channels=channels,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=channels, feat_channels=channels, num_convs=2),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=channels,
            conv_out_channels=channels,
            fc_out_channels=256,
            num_classes=1,
            norm_cfg=norm_cfg),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(
            in_channels=channels,
            conv_out_channels=channels,
            num_classes=1,
            norm_cfg=norm_cfg)),
    # fewer proposals / sampled RoIs than the COCO recipe (CPU-sized)
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# large-scale jitter at 256 (the 1024 recipe scaled down)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='visionllama_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.7, num_layers=4, no_decay_rule='upstream'),
    optimizer=dict(
        type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=dict(max_norm=5.0))

max_iters = _base_.max_iters
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[int(max_iters * 0.8)],
        gamma=0.1)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook',
        by_epoch=False,
        interval=250,
        max_keep_ckpts=1))
custom_hooks = [dict(type='visionllama_mm.Fp16CompressionHook')]
log_processor = dict(by_epoch=False)

# Quick start / end-to-end test: Mask R-CNN + FPN + a tiny Pyramid
# VisionLLaMA (AS2DRoPE on) on the real nuclei image of the stardist wheel
# (prepare it with `python tools/dataset_converters/prepare_nuclei.py`).
# CPU-sized: widths 32-128, 64-channel FPN / heads, ~256 x 256 inputs, fp32.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/nuclei_instance.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/schedules/nuclei_1k_iters.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

embed_dims = [32, 64, 96, 128]
channels = 64
model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.PyramidVisionLLaMADET',
        arch=dict(
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 3, 4],
            window_sizes=[7, 7, 7, 7],
            sr_ratios=[8, 4, 2, 1]),
        drop_path_rate=0.1,
        auto_scale=True),
    neck=dict(in_channels=embed_dims, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(
            in_channels=channels, fc_out_channels=256, num_classes=1),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(
            in_channels=channels, conv_out_channels=channels, num_classes=1)),
    # fewer proposals / sampled RoIs than the COCO recipe (CPU-sized)
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))),
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
log_processor = dict(by_epoch=False)

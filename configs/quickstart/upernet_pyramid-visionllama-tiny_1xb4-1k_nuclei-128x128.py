# Quick start / end-to-end test: UperNet + a tiny Pyramid VisionLLaMA (the
# Twins-SVT UperNet recipe with AS2DRoPE on) on the real nuclei image of the
# stardist wheel (prepare it with
# `python tools/dataset_converters/prepare_nuclei.py`). CPU-sized: widths
# 32-128, two blocks per stage (LSA + GSA), 128 x 128 tiles, BN, fp32.
_base_ = [
    'mmseg::_base_/models/twins_pcpvt-s_upernet.py',
    '../_base_/datasets/nuclei_semantic.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/nuclei_1k_iters.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
embed_dims = [32, 64, 96, 128]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.PyramidVisionLLaMA',
        arch=dict(
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 3, 4],
            window_sizes=[7, 7, 7, 7],
            sr_ratios=[8, 4, 2, 1]),
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        final_norm=False,
        norm_after_stage=True,
        auto_scale=True,
        drop_path_rate=0.1),
    decode_head=dict(
        in_channels=embed_dims, channels=32, num_classes=2, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=embed_dims[2],
        channels=16,
        num_classes=2,
        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))),
    clip_grad=dict(max_norm=1.0))

max_iters = _base_.max_iters
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=50,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook',
        by_epoch=False,
        interval=250,
        max_keep_ckpts=1))

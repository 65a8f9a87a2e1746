# Quick start / end-to-end test: UperNet + a tiny plain VisionLLaMA on the
# real nuclei image of the stardist wheel (prepare it with
# `python tools/dataset_converters/prepare_nuclei.py`). CPU-sized: 4 layers
# of width 64, patch 8 on the 128 x 128 tiles (16 x 16 tokens), BN instead
# of SyncBN, fp32. Same pieces as the ADE20K recipe: Feature2Pyramid, UPerHead +
# FCNHead, AdamW with layer-wise lr decay through get_layer_depth.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    '../_base_/datasets/nuclei_semantic.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/nuclei_1k_iters.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

norm_cfg = dict(type='BN', requires_grad=True)
embed_dims = 64
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch=dict(embed_dims=embed_dims, num_layers=4, num_heads=4),
        img_size=128,
        patch_size=8,
        drop_path_rate=0.1,
        out_type='featmap',
        final_norm=False,
        out_indices=[0, 1, 2, 3]),
    neck=dict(
        embed_dim=embed_dims, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[embed_dims] * 4,
        channels=32,
        num_classes=2,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=embed_dims, channels=16, num_classes=2, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='visionllama_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.9),
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

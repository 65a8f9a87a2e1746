# ViTDet Mask R-CNN with the plain VisionLLaMA-B (MAE 800 epochs), LSJ 1024,
# "36e" (docs/dense.md#vitdet-backbone, docs/dense.md#vitdet-mask-r-cnn). 8
# GPUs x 4 images per forward and accumulative_counts=2 -> 64 images per
# optimiser step. max_iters counts FORWARD iterations (137250 x 32 images ~ 37
# COCO epochs), as upstream.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance_lsj-1024.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading', 'visionllama_mm.necks'],
    allow_failed_imports=False)

# MAE-pretrained VisionLLaMA-B: the last checkpoint of
# configs/mae_visionllama/mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py, or the released
# HF mtgv/VisionLLaMA-Base-MAE epoch_800.pth converted to a tensors-only file:
#   python tools/model_converters/visionllama_to_mmpretrain.py \
#       epoch_800.pth checkpoints/visionllama-base-p16_mae-800e_in1k.pth
# Loaded with the 'backbone.' prefix (pos_embed / cls_token / ln1 unused).
checkpoint_file = 'checkpoints/visionllama-base-p16_mae-800e_in1k.pth'

backbone_channels = 768
norm_cfg = dict(type='LN2d', requires_grad=True)
image_size = (1024, 1024)
batch_augments = [
    dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
]
model = dict(
    data_preprocessor=dict(pad_size_divisor=32, batch_augments=batch_augments),
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.LLaMADET',
        arch='base',
        img_size=1024,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        final_norm=False,
        out_indices=[-1],
        window_size=14,
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        mask_window_padding=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='visionllama_mm.SimpleFPN',
        backbone_channel=backbone_channels,
        in_channels=[
            backbone_channels // 4, backbone_channels // 2, backbone_channels,
            backbone_channels
        ],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='visionllama_mm.LayerDecayOptimWrapperConstructor',
    accumulative_counts=2,
    paramwise_cfg=dict(
        layer_decay_rate=0.7,
        decay_type='layer_wise',
        num_layers=12,
        no_decay_rule='upstream'),
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1))

max_iters = 137250
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[102937, 125812],
        gamma=0.1)
]
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=dynamic_intervals)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        save_last=True,
        interval=interval,
        max_keep_ckpts=2))
custom_hooks = [dict(type='visionllama_mm.Fp16CompressionHook')]
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)

# 8 GPUs x 4 images per forward; --auto-scale-lr rescales from this.
auto_scale_lr = dict(enable=False, base_batch_size=32)

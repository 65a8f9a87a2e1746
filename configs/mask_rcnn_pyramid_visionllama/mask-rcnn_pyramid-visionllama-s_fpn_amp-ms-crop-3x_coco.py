# Mask R-CNN 3x (36 epochs) with multi-scale + crop training on COCO and
# Pyramid VisionLLaMA-S. EXTRAPOLATED: upstream released the -B recipe only
# (Detection.md: mmdetection/configs/twins/
# mask-rcnn_twins-b-p4-w7_fpn_ms-crop-3x_coco.py, run with --amp); -S and -L
# are that recipe with their backbone (drop path 0.2 as -B; -L 0.3). AS2DRoPE is on in the GSA blocks (auto_scale=True, anchor 14
# tokens per stage).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

# ImageNet-1k Pyramid VisionLLaMA-S: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-S best_checkpoint.pth, as downloaded or as its
# URL; it is converted while loading), or the file that
# tools/model_converters/pyramid_visionllama_to_mmpretrain.py writes. Its
# keys start with 'backbone.'; the classifier's norm / head are dropped and
# the dense norm_list is new.
checkpoint_file = 'checkpoints/pyramid-visionllama-s_in1k.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.PyramidVisionLLaMADET',
        arch='small',
        drop_path_rate=0.2,
        auto_scale=True,
        # Every batch gets the GSA RoPE tables of its own (H, W), so
        # multi-scale and non-square inputs (800x1216 then 1216x800) are
        # exact. The official backbone caches them per token count (stale
        # for another H x W of the same count); 'token_count' reproduces
        # that for an exact re-run of the official run.
        gsa_table_cache='per_shape',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# augmentation strategy of DETR / Sparse R-CNN (the mmdet 3x ms-crop recipe)
ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
             (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
             (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[[
            dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)
        ],
                    [
                        dict(
                            type='RandomChoiceResize',
                            scales=[(400, 1333), (500, 1333), (600, 1333)],
                            keep_ratio=True),
                        dict(
                            type='RandomCrop',
                            crop_type='absolute_range',
                            crop_size=(384, 600),
                            allow_negative_crop=True),
                        dict(
                            type='RandomChoiceResize',
                            scales=ms_scales,
                            keep_ratio=True)
                    ]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))

# 8 GPUs x 2 images per GPU
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Fine-tuning at 224 px of the deit-style VisionLLaMA-L trained at 128 px
# (spec-visionllama.md §8.4; upstream ImageNet1k_SFT.md): the base recipe
# with drop path 0.45. The upstream command leaves --reprob at the deit
# default, random erasing with probability 0.25.
_base_ = [
    './visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k.py'
]

pretrained = 'work_dirs/visionllama-deit3-large-p16_8xb256-lamb-800e_in1k-128px/epoch_800.pth'  # noqa: E501

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
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.45),
    head=dict(in_channels=1024),
    init_cfg=dict(checkpoint=pretrained))

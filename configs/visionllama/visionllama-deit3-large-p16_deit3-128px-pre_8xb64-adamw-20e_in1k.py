# Fine-tuning at 224 px of the deit-style VisionLLaMA-L trained at 128 px
# (upstream ImageNet1k_SFT.md): the base recipe
# with drop path 0.45. The upstream command leaves --reprob at the deit
# default, random erasing with probability 0.25.
_base_ = [
    './visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k.py'
]

pretrained = 'work_dirs/visionllama-deit3-large-p16_8xb256-lamb-800e_in1k-128px/epoch_800.pth'  # noqa: E501

# the base recipe's augmentation with random erasing (p = 0.25)
train_pipeline = [
    *_base_.train_pipeline[:-2],
    dict(_base_.train_pipeline[-2], erase_prob=0.25),  # RandomErasing
    _base_.train_pipeline[-1],
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

model = dict(
    backbone=dict(arch='large', drop_path_rate=0.45),
    head=dict(in_channels=1024),
    init_cfg=dict(checkpoint=pretrained))

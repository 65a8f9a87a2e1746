# ImageNet-1k data shared by the DeiT-III recipes of the deit-style
# VisionLLaMA (supervised training and the 224 px fine-tunes; upstream
# deit/main_b.py + datasets.py): pillow bicubic resizing; evaluation resizes
# the short edge to int(256 / 224 * s) and centre-crops s (the deit
# build_transform; its --eval-crop-ratio flag is never read), here s = 224;
# the train loader drops its last incomplete batch (625 iterations per epoch
# at 8 x 256 with repeated augmentation). Each recipe sets its train
# pipeline, batch sizes and train sampler.
data_root = 'data/imagenet'

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=256,  # int(256 / 224 * 224)
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    num_workers=10,
    drop_last=True,
    dataset=dict(type='ImageNet', data_root=data_root, split='train'),
    # seed 0 on every rank, as the deit samplers (the model seeds differ)
    sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
)
val_dataloader = dict(
    num_workers=10,
    dataset=dict(
        type='ImageNet',
        data_root=data_root,
        split='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

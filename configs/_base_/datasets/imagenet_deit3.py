# ImageNet-1k data shared by the DeiT-III recipes of the deit-style
# VisionLLaMA (supervised training and the 224 px fine-tunes, spec-
# visionllama.md §8.4): pillow bicubic resizing and evaluation at crop ratio
# 1.0 (short edge to 224, centre crop 224). Each recipe sets its train
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
        scale=224,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    num_workers=10,
    dataset=dict(type='ImageNet', data_root=data_root, split='train'),
    sampler=dict(type='DefaultSampler', shuffle=True),
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

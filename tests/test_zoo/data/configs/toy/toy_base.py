# Base of the zoo fixture: a 2-layer ViT classifier on 32 px inputs.
default_scope = 'mmpretrain'
embed_dims = 32
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(
            embed_dims=embed_dims,
            num_layers=2,
            num_heads=2,
            feedforward_channels=64),
        img_size=32,
        patch_size=8),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=embed_dims,
        loss=dict(type='CrossEntropyLoss')))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=1,
    dataset=dict(type='CustomDataset', data_root='', pipeline=test_pipeline))

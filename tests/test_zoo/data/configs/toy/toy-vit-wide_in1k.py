# Zoo fixture: a wider head-less variant tested at 48 px.
_base_ = ['./toy_base.py']
model = dict(backbone=dict(img_size=48), head=dict(num_classes=20))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CenterCrop', crop_size=48),
    dict(type='PackInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

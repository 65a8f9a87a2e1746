# COCO caption test data (Karpathy val split, COCO-caption (LAVIS) JSON) as
# LLaMA-Adapter V2 sees images: short edge to 224, centre crop 224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        interpolation='bicubic',
        backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(
        type='PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['image_id']),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        type='COCOCaption',
        data_root='data/coco',
        ann_file='annotations/coco_karpathy_val.json',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
    # MultiModalDataPreprocessor expects stacked images
    collate_fn=dict(type='default_collate'),
)
test_evaluator = dict(
    type='COCOCaption',
    ann_file='data/coco/annotations/coco_karpathy_val_gt.json')
test_cfg = dict()

# COCO caption training data (Karpathy split, COCO-caption (LAVIS) JSON)
# with LLaMA-Adapter V2's augmentation: a mild random resized crop to 224.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.9, 1.0),
        aspect_ratio_range=(0.75, 1.3333),
        interpolation='bicubic',
        backend='pillow'),
    dict(
        type='PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['image_id']),
]
# the same augmentation for instruction data (joint training, finetuning):
# text-only samples get a blank image
instruction_pipeline = [
    dict(type='visionllama_mm.LoadImageOrBlank', size=224),
    *train_pipeline[1:-1],
    dict(
        type='PackInputs',
        algorithm_keys=['question', 'input', 'gt_answer', 'text_only'],
        meta_keys=['image_id']),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    dataset=dict(
        type='COCOCaption',
        data_root='data/coco',
        ann_file='annotations/coco_karpathy_train.json',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    # MultiModalDataPreprocessor expects stacked images
    collate_fn=dict(type='default_collate'),
    drop_last=True,
)

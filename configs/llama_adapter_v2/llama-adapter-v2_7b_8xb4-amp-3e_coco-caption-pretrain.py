# LLaMA-Adapter V2 multimodal 7B, image-text pretraining phase (the released
# recipe, spec §3): only the visual bridge, adapter_query and the gates are
# trained, on image-caption pairs in COCO-caption (LAVIS) JSON format.
# Released recipe: 8 GPUs x 4, AdamW (0.9, 0.95), lr 1e-4 * 32 / 256,
# weight decay 0.05, 150 sub-epochs of 1/50 of the data (= 3 passes) with a
# 5 sub-epoch (= 0.1 pass) warmup and a half-cosine decay to 0, max_words 96.
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(
    imports=['visionllama_mm', 'visionllama_mm.multimodal'],
    allow_failed_imports=False)

llama_dir = 'data/llama/7B'
tokenizer_path = 'data/llama/tokenizer.model'
clip_dir = 'data/clip-vit-large-patch14'

model = dict(
    type='visionllama_mm.LLaMAAdapterV2',
    llm=dict(meta_dir=llama_dir, dtype='float16'),
    tokenizer=dict(type='LlamaTokenizer', name_or_path=tokenizer_path),
    vision_encoder=dict(type='hf', name_or_path=clip_dir, dtype='float16'),
    phase='pretrain',
    task='caption',
    max_words=96,
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        mean=[122.770938, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        to_rgb=False),
)

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
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    dataset=dict(
        type='COCOCaption',
        data_root='data/coco',
        ann_file='annotations/coco_karpathy_train.json',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    persistent_workers=True,
    # MultiModalDataPreprocessor expects stacked images
    collate_fn=dict(type='default_collate'),
    drop_last=True,
)

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='visionllama_mm.LLaMAAdapterV2OptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4 * 32 / 256, betas=(0.9, 0.95),
        weight_decay=0.05))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=True,
        begin=0,
        end=0.1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=True,
        begin=0.1,
        end=3,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=3)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
# the learning rate above is for 8 GPUs x 4 samples
auto_scale_lr = dict(base_batch_size=32)

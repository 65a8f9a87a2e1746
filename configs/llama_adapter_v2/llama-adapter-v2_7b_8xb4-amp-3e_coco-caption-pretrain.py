# LLaMA-Adapter V2 multimodal 7B, image-text pretraining phase (the released
# recipe, docs/llama_adapter_v2.md#phases-and-trainable-groups): only the
# visual bridge, adapter_query and the gates are trained, on image-caption
# pairs in COCO-caption (LAVIS) JSON format. Released recipe: 8 GPUs x 4, AdamW
# (0.9, 0.95), lr 1e-4 * 32 / 256, weight decay 0.05, 150 sub-epochs of 1/50 of
# the data (= 3 passes) with a 5 sub-epoch (= 0.1 pass) warmup and a
# half-cosine decay to 0, max_words 96.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/models/llama-adapter-v2_7b.py',
    '../_base_/datasets/llama-adapter-v2_coco-caption_train.py',
]

model = dict(phase='pretrain', task='caption', max_words=96)

train_dataloader = dict(persistent_workers=True)

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

# Shared recipe of DiT-LLaMA / SiT-LLaMA (spec-visionllama.md §6.3, §8.10):
# ImageNet 256 in the latent space of the SD VAE (sd-vae-ft-ema, a local
# folder loaded by diffusers.AutoencoderKL.from_pretrained), AdamW 1e-4
# constant (no weight decay, no warmup, no clipping), global batch 256
# (8 GPUs x 32), EMA 0.9999 initialised as a copy, seed 0, 400k iterations.
default_scope = 'mmagic'
custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

vae_path = 'data/sd-vae-ft-ema'  # local copy of stabilityai/sd-vae-ft-ema
data_root = 'data/imagenet'

data_preprocessor = dict(
    type='mmagic.DataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)

# ADM-style: square centre crop, resize to 256 (bicubic), random h-flip
train_pipeline = [
    dict(type='mmagic.LoadImageFromFile', key='gt', channel_order='rgb'),
    dict(type='mmagic.CenterCropLongEdge', keys=['gt']),
    dict(
        type='mmagic.Resize',
        keys=['gt'],
        scale=(256, 256),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='mmagic.Flip', keys=['gt'], direction='horizontal'),
    dict(type='mmagic.PackInputs', keys=['gt'], data_keys=['gt_label']),
]
train_dataloader = dict(
    batch_size=32,  # per GPU; 8 GPUs -> 256
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='mmagic.ImageNet',
        data_root=data_root,
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=train_pipeline))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=400000)
val_cfg = None
test_cfg = None

# The official runs use fp16 autocast with a GradScaler; bf16
# (dtype='bfloat16') avoids the fp16 NaNs reported for DiT/SiT training.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0., betas=(0.9, 0.999)))

custom_hooks = [
    dict(
        type='EMAHook',
        ema_type='ExponentialMovingAverage',
        momentum=1e-4,  # decay 0.9999
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        interval=50000,
        by_epoch=False,
        max_keep_ckpts=-1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)

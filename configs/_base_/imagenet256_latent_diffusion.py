# Shared recipe of DiT-LLaMA / SiT-LLaMA (spec-visionllama.md §6.3, §8.10):
# ImageNet 256 in the latent space of the SD VAE (sd-vae-ft-ema, a local
# folder loaded by diffusers.AutoencoderKL.from_pretrained), AdamW 1e-4
# constant (no weight decay, no warmup, no clipping), global batch 256
# (8 GPUs x 32), EMA 0.9999 initialised as a copy, seed 0, 400k iterations.
# The family configs add the model type, arch, objective and sampler.
_base_ = ['./generation_runtime.py']

vae_path = 'data/sd-vae-ft-ema'  # local copy of stabilityai/sd-vae-ft-ema
data_root = 'data/imagenet'

data_preprocessor = dict(
    type='mmagic.DataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)

model = dict(
    net_cfg=dict(
        input_size=32,  # 256 / 8 (SD-VAE latents)
        num_classes=1000,
        class_dropout_prob=0.1,
        learn_sigma=True,
        cfg_channels=3),  # official: guide 3 of the 4 latent channels
    vae=dict(path=vae_path, scale_factor=0.18215),
    data_preprocessor=data_preprocessor)

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

train_cfg = dict(max_iters=400000)

# The official runs use fp16 autocast with a GradScaler; bf16
# (dtype='bfloat16') avoids the fp16 NaNs reported for DiT/SiT training.
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(lr=1e-4))

default_hooks = dict(
    logger=dict(interval=100),
    checkpoint=dict(interval=50000, max_keep_ckpts=-1),
    sampler_seed=dict(type='DistSamplerSeedHook'))

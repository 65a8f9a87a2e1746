# Shared recipe of DiT-LLaMA / SiT-LLaMA (upstream dit/train.py and
# sit/train.py): ImageNet 256 in the latent space of the SD VAE
# (sd-vae-ft-ema, a local folder loaded by diffusers.AutoencoderKL.
# from_pretrained), ADM centre crop + horizontal flip, AdamW 1e-4 constant
# (no weight decay, no warmup, no clipping), fp16 autocast with a GradScaler,
# global batch 256 (8 GPUs x 32), EMA 0.9999 initialised as a copy, 400k
# iterations, one seed per rank. The family configs add the model type,
# arch, objective and sampler.
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

# ADM's center_crop_arr (box-filter halving while the short side >= 512,
# bicubic resize of the short side to 256, centre crop), random h-flip;
# images decoded by PIL as the official ImageFolder loader does
train_pipeline = [
    dict(
        type='mmagic.LoadImageFromFile',
        key='gt',
        channel_order='rgb',
        imdecode_backend='pillow'),
    dict(type='visionllama_mm.CenterCropArr', keys=['gt'], image_size=256),
    dict(type='mmagic.Flip', keys=['gt'], direction='horizontal'),
    dict(type='mmagic.PackInputs', keys=['gt'], data_keys=['gt_label']),
]
train_dataloader = dict(
    batch_size=32,  # per GPU; 8 GPUs -> 256
    num_workers=8,
    persistent_workers=True,
    # the data order is seeded with the global seed on every rank (the
    # official DistributedSampler(seed=global_seed)); only the model-side
    # randomness differs per rank (randomness below)
    sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
    dataset=dict(
        type='mmagic.ImageNet',
        data_root=data_root,
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=train_pipeline))

train_cfg = dict(max_iters=400000)

# The official runs use fp16 autocast with a GradScaler (their --use_fp32
# defaults to False); bf16 (dtype='bfloat16') avoids the fp16 NaNs reported
# for DiT/SiT training but is not the official recipe.
optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(lr=1e-4))

# Each rank draws its own timesteps, noise, VAE-posterior noise and label
# drops. The official scripts seed rank r with global_seed * world_size + r;
# mmengine's diff_rank_seed seeds it with seed + r: the same seeds for
# global seed 0 on any number of GPUs (another seed s gives s + r here,
# s * world_size + r there).
randomness = dict(seed=0, diff_rank_seed=True)

default_hooks = dict(
    logger=dict(interval=100),
    checkpoint=dict(interval=50000, max_keep_ckpts=-1),
    sampler_seed=dict(type='DistSamplerSeedHook'))

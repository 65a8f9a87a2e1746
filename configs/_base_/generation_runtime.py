# Runtime shared by the generation recipes (imagenet256_latent_diffusion.py,
# mnist5k_pixel.py): iteration-based training without validation, AdamW
# without weight decay, an EMA of the weights initialised as a copy (the
# official decay 0.9999), seed 0. The recipes set the iterations, learning
# rate, log and checkpoint intervals.
default_scope = 'mmagic'
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

train_cfg = dict(type='IterBasedTrainLoop')
val_cfg = None
test_cfg = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', weight_decay=0., betas=(0.9, 0.999)))

custom_hooks = [
    dict(
        type='EMAHook',
        ema_type='ExponentialMovingAverage',
        momentum=1e-4,  # decay 0.9999
        priority='ABOVE_NORMAL')
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook', by_epoch=False))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)

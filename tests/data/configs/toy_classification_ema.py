# The toy task in one process (batches of 4 in dataset order) with mmengine's
# EMAHook: the reference of toy_classification_fsdp_ema.py.
_base_ = './toy_classification_global_loss.py'

custom_hooks = [
    dict(type='visionllama_mm.GlobalLossRecorder'),
    dict(type='EMAHook', momentum=0.5, priority='ABOVE_NORMAL')
]

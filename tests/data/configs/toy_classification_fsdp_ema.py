# The FSDP toy task with an EMA of the weights kept on the parameter shards
# (visionllama_mm.FSDPEMAHook); momentum 0.5 so that the average differs
# clearly from the weights. Reference: toy_classification_ema.py.
_base_ = './toy_classification_fsdp.py'

custom_hooks = [
    dict(type='visionllama_mm.GlobalLossRecorder'),
    dict(
        type='visionllama_mm.FSDPEMAHook',
        momentum=0.5,
        priority='ABOVE_NORMAL')
]

# toy_classification_fsdp_ema.py stopped after epoch 2, as if the job were
# killed there.
_base_ = './toy_classification_fsdp_ema.py'

custom_hooks = [
    dict(type='visionllama_mm.GlobalLossRecorder'),
    dict(
        type='visionllama_mm.FSDPEMAHook',
        momentum=0.5,
        priority='ABOVE_NORMAL'),
    dict(type='visionllama_mm.ToyInterruptHook', epoch=2)
]

# toy_classification_deepspeed.py stopped after epoch 2, as if the job were
# killed there (the config is otherwise unchanged, so a resumed run must
# continue exactly like the uninterrupted one).
_base_ = './toy_classification_deepspeed.py'

custom_hooks = [
    dict(type='visionllama_mm.GlobalLossRecorder'),
    dict(type='visionllama_mm.ToyInterruptHook', epoch=2)
]

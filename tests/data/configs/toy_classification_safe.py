# toy_classification.py with the crash-safe checkpoint hook keeping one
# checkpoint (the setting that loses a run with mmengine's CheckpointHook).
_base_ = './toy_classification.py'

default_hooks = dict(
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook',
        interval=1,
        max_keep_ckpts=1))

# The toy task in one process with the loss recorder of the FSDP tests and
# batches of 4 in dataset order (the reference of toy_classification_fsdp.py).
_base_ = ['./toy_classification.py']
custom_imports = dict(imports=[
    'visionllama_mm.safe_loading', 'visionllama_mm_toy',
    'visionllama_mm_fsdp_toy'
])

train_dataloader = dict(sampler=dict(shuffle=False))
custom_hooks = [dict(type='visionllama_mm.GlobalLossRecorder')]

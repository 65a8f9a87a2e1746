# The toy task under FSDP (FlexibleRunner + FSDPStrategy, the shipped
# strategy snippet), each Linear layer its own FSDP unit; batches of 2 per
# rank in dataset order, so that 2 ranks see what one process with batches
# of 4 sees (toy_classification_global_loss.py).
_base_ = [
    './toy_classification.py',
    '../../../configs/_base_/strategies/fsdp.py',
]
custom_imports = dict(imports=[
    'visionllama_mm.safe_loading', 'visionllama_mm_toy',
    'visionllama_mm_fsdp_toy'
])

train_dataloader = dict(batch_size=2, sampler=dict(shuffle=False))
strategy = dict(
    model_wrapper=dict(auto_wrap_policy=dict(block_types=['torch.nn.Linear'])))
custom_hooks = [dict(type='visionllama_mm.GlobalLossRecorder')]

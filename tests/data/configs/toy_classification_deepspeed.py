# The toy task under DeepSpeed ZeRO (FlexibleRunner + DeepSpeedStrategy, the
# shipped stage-2 snippet) with a torch SGD optimizer; batches of 2 per rank
# in dataset order, so that 2 ranks see what one process with batches of 4
# sees (toy_classification_global_loss.py). The stage is set by
# --cfg-options strategy.zero_optimization.stage=N.
_base_ = [
    './toy_classification.py',
    '../../../configs/_base_/strategies/deepspeed_zero2.py',
]
custom_imports = dict(imports=[
    'visionllama_mm.safe_loading', 'visionllama_mm_toy',
    'visionllama_mm_fsdp_toy'
])

train_dataloader = dict(batch_size=2, sampler=dict(shuffle=False))
# DeepSpeed's default communication buckets (5e8 elements) are allocated
# every step: far too large for a 195-parameter model on a CPU
strategy = dict(
    train_micro_batch_size_per_gpu=2,
    zero_optimization=dict(
        reduce_bucket_size=100000, allgather_bucket_size=100000))
optim_wrapper = dict(
    _delete_=True,
    type='DeepSpeedOptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
custom_hooks = [dict(type='visionllama_mm.GlobalLossRecorder')]

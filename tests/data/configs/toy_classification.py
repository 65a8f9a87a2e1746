# A tiny deterministic training job for the foundation tests: an MLP on 24
# fixed random vectors (tests/data/visionllama_mm_toy.py). CPU, seconds.
custom_imports = dict(
    imports=['visionllama_mm.safe_loading', 'visionllama_mm_toy'],
    allow_failed_imports=False)

model = dict(type='visionllama_mm.ToyClassifier')

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='visionllama_mm.ToyDataset', num_samples=24))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='visionllama_mm.ToyDataset', num_samples=16, seed=1))
test_dataloader = val_dataloader
val_evaluator = dict(type='visionllama_mm.ToyAccuracy')
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=2)
val_cfg = dict()
test_cfg = dict()

# SGD with momentum and a cosine schedule of fixed length, so that resuming
# must restore both the optimizer state and the scheduler.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=4, by_epoch=True)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=1))
log_processor = dict(window_size=1, by_epoch=True)
log_level = 'INFO'

randomness = dict(seed=0, deterministic=True)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))

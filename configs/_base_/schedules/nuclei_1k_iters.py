# The 1k-iteration CPU schedule shared by the four nuclei quick starts
# (configs/quickstart/*nuclei*.py): iteration-based loops validating every
# 250 iterations, seed 0. Listed next to mmseg's / mmdet's default_runtime,
# so it defines no key those define (default_hooks, log_processor); each
# quick start keeps its optimizer, lr schedule (against _base_.max_iters)
# and hooks.
max_iters = 1000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=250)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
randomness = dict(seed=0)

"""TimmCosineLR: timm's epoch cosine as the deit scripts step it."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper

from visionllama_mm.engine import TimmCosineLR
from visionllama_mm.registry import PARAM_SCHEDULERS

BASE, WARMUP_LR, MIN_LR, WARMUP, EPOCHS = 4e-3, 1e-6, 1e-5, 5, 30


def timm_value(t, base):
    """timm 0.3.2 CosineLRScheduler._get_lr (warmup_prefix False)."""
    if t < WARMUP:
        return WARMUP_LR + t * (base - WARMUP_LR) / WARMUP
    return MIN_LR + 0.5 * (base - MIN_LR) * (1 +
                                             math.cos(math.pi * t / EPOCHS))


def official_loop_lrs(base):
    """lr of every epoch of the deit main loop: the scheduler starts at
    f(0) (timm sets warmup_lr_init on construction) and is stepped with
    lr_scheduler.step(epoch) after epoch ``epoch``."""
    lr, lrs = timm_value(0, base), []
    for epoch in range(EPOCHS):
        lrs.append(lr)  # train_one_epoch(...)
        lr = timm_value(epoch, base)  # lr_scheduler.step(epoch)
    return lrs


def optim_wrapper(lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    groups = [dict(params=[p], lr=lr) for p, lr in zip(params, lrs)]
    return OptimWrapper(torch.optim.SGD(groups, lr=lrs[0]))


def test_matches_the_official_epoch_loop():
    bases = [BASE, BASE * 0.45]  # e.g. layer-decayed groups
    wrapper = optim_wrapper(bases)
    sched = PARAM_SCHEDULERS.build(
        dict(
            type='visionllama_mm.TimmCosineLR',
            t_initial=EPOCHS,
            warmup_t=WARMUP,
            warmup_lr_init=WARMUP_LR,
            lr_min=MIN_LR,
            by_epoch=True),
        default_args=dict(optimizer=wrapper))
    assert isinstance(sched, TimmCosineLR)
    got = [[] for _ in bases]
    for _ in range(EPOCHS):  # mmengine: step after every training epoch
        # (mmengine appends a base-settings group to several groups)
        for i, group in zip(range(len(bases)), wrapper.param_groups):
            got[i].append(group['lr'])
        sched.step()
    for i, base in enumerate(bases):
        assert got[i] == pytest.approx(official_loop_lrs(base), rel=1e-12)
    # the lag: epochs 0 and 1 both at the warm-up start, the last epoch at
    # f(EPOCHS - 2), and the cosine counts from epoch 0, not from warm-up
    assert got[0][0] == got[0][1] == WARMUP_LR
    assert got[0][
        WARMUP + 1] == pytest.approx(MIN_LR + 0.5 * (BASE - MIN_LR) *
                                     (1 + math.cos(math.pi * WARMUP / EPOCHS)))


def test_lag_zero_is_the_schedule():
    wrapper = optim_wrapper([BASE])
    sched = TimmCosineLR(
        wrapper,
        t_initial=EPOCHS,
        warmup_t=WARMUP,
        warmup_lr_init=WARMUP_LR,
        lr_min=MIN_LR,
        lag=0)
    for epoch in range(EPOCHS + 3):
        want = timm_value(epoch, BASE) if epoch < EPOCHS else MIN_LR
        assert wrapper.param_groups[0]['lr'] == pytest.approx(want)
        sched.step()


def test_invalid_arguments():
    wrapper = optim_wrapper([BASE])
    with pytest.raises(ValueError, match='by_epoch'):
        TimmCosineLR(wrapper, t_initial=10, by_epoch=False)
    with pytest.raises(ValueError, match='lag'):
        TimmCosineLR(wrapper, t_initial=10, lag=-1)
    with pytest.raises(ValueError, match='t_initial'):
        TimmCosineLR(wrapper, t_initial=0)


def test_in_an_mmengine_runner(tmp_path):
    """Through Runner + ParamSchedulerHook: every iteration of epoch e runs
    at the official lr of epoch e (constant within the epoch)."""
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return dict(loss=(self.w - torch.stack(inputs)).pow(2).mean())

    seen = []

    class Record(Hook):

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            seen.append(
                (runner.epoch, runner.optim_wrapper.param_groups[0]['lr']))

    epochs = 8
    runner = Runner(
        model=Toy(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(1))] * 6,
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=BASE)),
        param_scheduler=[
            dict(
                type='visionllama_mm.TimmCosineLR',
                t_initial=EPOCHS,
                warmup_t=WARMUP,
                warmup_lr_init=WARMUP_LR,
                lr_min=MIN_LR)
        ],
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        custom_hooks=[Record()],
        default_hooks=dict(checkpoint=None, logger=None),
        default_scope='mmengine')
    runner.train()
    want = official_loop_lrs(BASE)
    assert len(seen) == epochs * 3
    for epoch, lr in seen:
        assert lr == pytest.approx(want[epoch], rel=1e-12)

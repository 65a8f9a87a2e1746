"""``TimmCosineLR``: timm's epoch cosine schedule as the deit scripts step it.

The deit ``main.py`` / ``main_b.py`` scripts that trained the DeiT-III-style
plain and the pyramid VisionLLaMA classifiers build timm's
``CosineLRScheduler`` (timm 0.3.2, ``t_in_epochs=True``, no warm-up prefix)
and call ``lr_scheduler.step(epoch)`` *after* training epoch ``epoch``. The
lr is therefore constant within an epoch and lags the schedule by one
epoch: epoch 0 and epoch 1 both train at ``f(0)`` (the warm-up start),
epoch ``e >= 1`` at ``f(e - 1)``, where (for ``t`` in epochs)::

    f(t) = warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t
                                                         for t < warmup_t
    f(t) = lr_min + (base_lr - lr_min) * (1 + cos(pi * t / t_initial)) / 2
                                                         otherwise

The cosine is over ``t_initial`` epochs counted from epoch 0 (not from the
end of the warm-up), so it is not mmengine's ``LinearLR`` +
``CosineAnnealingLR`` pair; the timm cool-down epochs are never trained by
the scripts (their loop stops at ``--epochs``). ``base_lr`` is each param
group's initial lr (layer-decayed groups scale theirs); ``warmup_lr_init``
and ``lr_min`` are absolute, as in timm.
"""
import math
from typing import List

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from visionllama_mm.registry import PARAM_SCHEDULERS

__all__ = ['TimmCosineLR', 'timm_cosine_lr']


def timm_cosine_lr(t: int, base_lr: float, t_initial: int, warmup_t: int,
                   warmup_lr_init: float, lr_min: float) -> float:
    """Value of timm's ``CosineLRScheduler`` (one cycle) at epoch ``t``."""
    if t < warmup_t:
        return warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t
    if t >= t_initial:  # past the cycle (cycle_limit 1): lr_min
        return lr_min
    return lr_min + 0.5 * (base_lr -
                           lr_min) * (1 + math.cos(math.pi * t / t_initial))


@PARAM_SCHEDULERS.register_module()
class TimmCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Epoch-stepped timm cosine lr with warm-up and the deit one-epoch lag.

    In epoch ``e`` (mmengine steps epoch schedulers after each epoch, so
    ``last_step == e`` while epoch ``e`` trains) the lr of a param group is
    ``timm_cosine_lr(max(e - lag, 0), group_initial_lr, ...)``.

    Args:
        optimizer (Optimizer | OptimWrapper): Wrapped optimizer.
        t_initial (int): Epochs of the cosine cycle (``--epochs``).
        warmup_t (int): Warm-up epochs (``--warmup-epochs``). Defaults to 5.
        warmup_lr_init (float): lr at epoch 0 of the warm-up
            (``--warmup-lr``). Defaults to 1e-6.
        lr_min (float): Floor of the cosine (``--min-lr``). Defaults to
            1e-5.
        lag (int): Epochs the applied lr lags the schedule: 1 reproduces
            ``lr_scheduler.step(epoch)`` after each epoch (the deit
            scripts), 0 is the schedule itself. Defaults to 1.
        begin (int): First epoch the scheduler acts on. Defaults to 0.
        end (int): Epoch it stops acting at. Defaults to INF.
        last_step (int): For resuming without a state dict. Defaults to -1.
        by_epoch (bool): Must be True (the schedule is per epoch).
            Defaults to True.
        verbose (bool): Print each update. Defaults to False.
    """

    def __init__(self,
                 optimizer,
                 t_initial: int,
                 warmup_t: int = 5,
                 warmup_lr_init: float = 1e-6,
                 lr_min: float = 1e-5,
                 lag: int = 1,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False) -> None:
        if not by_epoch:
            raise ValueError('TimmCosineLR steps per epoch: by_epoch must '
                             'be True, got False')
        for name, value in (('t_initial', t_initial), ('warmup_t', warmup_t),
                            ('lag', lag)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        if t_initial < 1:
            raise ValueError(f't_initial must be >= 1, got {t_initial}')
        self.t_initial = t_initial
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self.lr_min = lr_min
        self.lag = lag
        super().__init__(  # LRSchedulerMixin sets param_name='lr'
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    def _get_value(self) -> List[float]:
        t = max(self.last_step - self.lag, 0)
        return [
            timm_cosine_lr(t, base, self.t_initial, self.warmup_t,
                           self.warmup_lr_init, self.lr_min)
            for base in self.base_values
        ]

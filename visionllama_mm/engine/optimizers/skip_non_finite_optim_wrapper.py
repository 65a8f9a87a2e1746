"""Optimizer wrappers that skip iterations whose loss is not finite.

The pyramid VisionLLaMA ImageNet recipe (the deit ``engine.py`` the released
classifiers were trained with) checks the loss of every iteration: when it
is NaN or inf on any rank (the flag is all-reduced), every rank drops the
iteration (no backward, no optimizer or loss-scaler step) and training goes
on. mmengine's wrappers would back-propagate it; the AMP one would then
skip the step *and* halve its loss scale. These wrappers reproduce the
official skip.
"""
import logging

import torch
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from torch import Tensor

from visionllama_mm.registry import OPTIM_WRAPPERS

__all__ = ['SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper']


class _SkipNonFiniteMixin:
    """``update_params`` that drops an iteration with a non-finite loss.

    The decision is the same on every rank (a non-finite loss anywhere skips
    everywhere), so DDP never waits for a missing gradient reduction. A
    skipped iteration still counts for gradient accumulation; the gradients
    accumulated so far in its window are discarded with it.
    ``skipped_iters`` counts the skipped iterations.
    """

    skipped_iters: int = 0

    def loss_is_finite(self, loss: Tensor) -> bool:
        """Whether ``loss`` is finite on every rank."""
        bad = (~torch.isfinite(loss.detach())).any().to(torch.float32)
        all_reduce(bad, op='sum')
        return bool(bad.item() == 0)

    def update_params(self, loss: Tensor, step_kwargs=None, zero_kwargs=None):
        if self.loss_is_finite(loss):
            return super().update_params(loss, step_kwargs, zero_kwargs)
        self.skipped_iters += 1
        print_log(
            f'{type(self).__name__}: non-finite loss ({loss.item()}), '
            f'iteration skipped ({self.skipped_iters} so far)',
            logger='current',
            level=logging.WARNING)
        self._inner_count += 1
        self.zero_grad(**(zero_kwargs or {}))
        return None


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(_SkipNonFiniteMixin, OptimWrapper):
    """mmengine ``OptimWrapper`` that skips non-finite-loss iterations."""


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteAmpOptimWrapper(_SkipNonFiniteMixin, AmpOptimWrapper):
    """mmengine ``AmpOptimWrapper`` that skips non-finite-loss iterations.

    The official recipe autocasts (bf16 where supported) with a GradScaler;
    a skipped iteration leaves the scaler untouched, as there.
    """

"""Test helpers for crash and resume tests (imported by configs written in
the tests, and by ``kill_point_train.py``).

``ResumeTestStopHook`` stops a run right after a given iteration or epoch
(after the checkpoint hook of that step, which has a higher priority):

* ``mode='raise'`` raises :class:`Interrupted` (in-process runners);
* ``mode='exit'`` ends the process with ``os._exit(0)`` (torchrun jobs),
  as a crash would, without any clean-up.
"""
import os

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class Interrupted(Exception):
    """Raised by ``ResumeTestStopHook(mode='raise')``."""


@HOOKS.register_module(force=True)
class ResumeTestStopHook(Hook):
    """Stop after iteration ``at_iter`` or epoch ``at_epoch`` (1-based)."""

    priority = 'LOWEST'

    def __init__(self, at_iter=None, at_epoch=None, mode='raise') -> None:
        self.at_iter = at_iter
        self.at_epoch = at_epoch
        self.mode = mode

    def _stop(self, where: str) -> None:
        if self.mode == 'exit':
            os._exit(0)
        raise Interrupted(where)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        if self.at_iter is not None and runner.iter + 1 == self.at_iter:
            self._stop(f'iteration {self.at_iter}')

    def after_train_epoch(self, runner) -> None:
        if self.at_epoch is not None and runner.epoch + 1 == self.at_epoch:
            self._stop(f'epoch {self.at_epoch}')

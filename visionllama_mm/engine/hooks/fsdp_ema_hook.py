"""``FSDPEMAHook``: mmengine's ``EMAHook`` for FSDP-sharded models.

mmengine's ``EMAHook`` builds its average by deep-copying the model, which an
FSDP-wrapped model does not support, and a full copy per rank would undo the
sharding anyway. This hook keeps the same average (mmengine's
``ExponentialMovingAverage`` or any ``BaseAveragedModel``: same momentum,
interval and update rule) over each rank's own shard of the parameters:

* With ``use_orig_params=True`` (the shipped FSDP snippets), outside forward
  every parameter of the wrapped model is a 1-D view of this rank's part of
  it (empty when the rank holds none of it). The hook wraps these views in a
  small module (:class:`_LocalShards`) and lets mmengine's averaged model
  copy and update that module, so each rank stores 1/N of the average.
  The update is elementwise, so the sharded average equals the average of a
  replicated run.
* Checkpoints hold the full average in mmengine's layout: before a save the
  hook writes its shards into the model, asks the strategy for the model's
  state dict (a collective: the consolidated one of ``state_dict_cfg='full'``
  on rank 0), and writes the trained shards back. As with ``EMAHook``,
  ``state_dict`` then holds the averaged weights (what ``tools/test.py``,
  ``load_from`` and the samplers load) and ``ema_state_dict`` the trained
  ones (``module.``-prefixed, with ``steps``).
* ``--resume`` loads the average back through the strategy (each rank keeps
  its shard); ``load_from`` a checkpoint without ``ema_state_dict`` starts
  the average from its weights, as ``EMAHook`` does.

Buffers are not averaged (``update_buffers=True`` is refused); the average's
buffers are the model's, as with ``EMAHook``'s default.
"""
from typing import List

import torch
from mmengine.hooks import EMAHook
from torch import nn

from visionllama_mm.registry import HOOKS

__all__ = ['FSDPEMAHook']


class _LocalShards(nn.Module):
    """The given tensors as parameters ``p0``, ``p1``, ... (no copy)."""

    def __init__(self, tensors: List[torch.Tensor]) -> None:
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_parameter(f'p{i}',
                                    nn.Parameter(t, requires_grad=False))


@HOOKS.register_module()
class FSDPEMAHook(EMAHook):
    """``EMAHook`` for models wrapped by mmengine's ``FSDPStrategy``.

    Use it in place of ``EMAHook`` with the same arguments, e.g.
    ``dict(type='visionllama_mm.FSDPEMAHook',
    ema_type='ExponentialMovingAverage', momentum=1e-4,
    priority='ABOVE_NORMAL')``.

    Args:
        ema_type (str): The averaged model type. Defaults to
            ``'ExponentialMovingAverage'``.
        strict_load (bool): Strict key matching when loading the average.
            Defaults to False.
        begin_iter (int): Iteration from which to average. Defaults to 0.
        begin_epoch (int): Epoch from which to average. Defaults to 0.
        **kwargs: Arguments of the averaged model (``momentum``,
            ``interval``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.ema_cfg.get('update_buffers', False):
            raise ValueError('FSDPEMAHook: update_buffers must be False '
                             '(buffers are not sharded), got True')
        self.ema_model = None

    # the model's local shards ------------------------------------------
    @staticmethod
    def _fsdp_model(runner) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        model = runner.model
        if not any(isinstance(m, FSDP) for m in model.modules()):
            raise TypeError(
                'FSDPEMAHook needs a model wrapped by FSDPStrategy '
                f'(runner_type FlexibleRunner), got {type(model).__name__}; '
                'use EMAHook otherwise')
        return model

    def _local_params(self, runner) -> List[torch.Tensor]:
        """This rank's views of the parameters (use_orig_params=True)."""
        return [p.detach() for p in self._fsdp_model(runner).parameters()]

    def _shards(self, runner) -> _LocalShards:
        return _LocalShards(self._local_params(runner))

    def _build(self, runner) -> None:
        if self.ema_model is None:
            from mmengine.registry import MODELS
            self.ema_model = MODELS.build(
                self.ema_cfg, default_args=dict(model=self._shards(runner)))

    def _averages(self) -> List[torch.Tensor]:
        return [p.data for p in self.ema_model.module.parameters()]

    @torch.no_grad()
    def _swap(self, runner) -> None:
        """Exchange the model's shards with the average's."""
        for p_src, p_avg in zip(self._local_params(runner), self._averages()):
            tmp = p_avg.clone()
            p_avg.copy_(p_src)
            p_src.copy_(tmp)

    # EMAHook ---------------------------------------------------------------
    def before_run(self, runner) -> None:
        """Build the average of the local shards (``FlexibleRunner`` calls
        this after wrapping the model and after loading a checkpoint)."""
        self._build(runner)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        shards = self._shards(runner)
        if self._ema_started(runner):
            self.ema_model.update_parameters(shards)
        else:
            with torch.no_grad():
                for p_avg, p_src in zip(self._averages(), shards.parameters()):
                    p_avg.copy_(p_src)

    def _swap_ema_parameters(self) -> None:
        raise NotImplementedError  # replaced by the runner-aware hooks below

    def before_val_epoch(self, runner) -> None:
        self._swap(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap(runner)

    def before_test_epoch(self, runner) -> None:
        self._swap(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._swap(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Put the full average into the checkpoint (all ranks take part;
        with ``state_dict_cfg='full'`` only rank 0's dict is filled)."""
        self._swap(runner)
        try:
            averaged = runner.strategy.model_state_dict()
        finally:
            self._swap(runner)
        ema_state = {f'module.{k}': v for k, v in averaged.items()}
        if averaged:
            ema_state['steps'] = self.ema_model.steps.clone()
        checkpoint['ema_state_dict'] = ema_state
        self._swap_ema_state_dict(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Load the average (``--resume``) or start it from the loaded
        weights (``load_from``) into this rank's shards."""
        self._build(runner)
        if 'ema_state_dict' in checkpoint and runner._resume:
            self._swap_ema_state_dict(checkpoint)
            ema_state = checkpoint['ema_state_dict']
            averaged = {
                k[len('module.'):]: v
                for k, v in ema_state.items() if k.startswith('module.')
            }
            steps = ema_state.get('steps')
        else:
            averaged, steps = checkpoint['state_dict'], None
        # the strategy loads checkpoint['state_dict'] into the model after
        # this hook, so the model may carry the average meanwhile
        runner.strategy.load_model_state_dict(
            averaged, strict=self.strict_load)
        with torch.no_grad():
            for p_avg, p_src in zip(self._averages(),
                                    self._local_params(runner)):
                p_avg.copy_(p_src)
        if steps is not None:
            self.ema_model.steps.copy_(steps)

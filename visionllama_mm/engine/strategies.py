"""``FSDPStrategy``: mmengine's FSDP strategy with resuming fixed and
``sync_module_states`` working on CPU.

mmengine 0.10.7's ``FSDPStrategy.load_optim_state_dict`` calls
``FSDP.optim_state_dict_to_load(state_dict, model, optimizer)``, the
argument order of torch < 2.1; torch 2.1 and later take
``(model, optimizer, state_dict)``, so ``--resume`` of an FSDP run stops
with ``TypeError: unhashable type: 'dict'``. This subclass passes them in
torch's order.

``sync_module_states=True`` makes FSDP copy rank 0's parameters and buffers
to every rank before sharding, as DDP does; without it, ranks seeded
differently (``randomness.diff_rank_seed``) start from different weights.
FSDP refuses it for a model on the CPU (gloo runs), so there this strategy
broadcasts the states itself and wraps with ``sync_module_states=False``.
Everything else is mmengine's. The shipped strategy snippets
(``configs/_base_/strategies/fsdp.py``) name it
``visionllama_mm.FSDPStrategy``.

The package does not import this module (mmengine's strategy package imports
deepspeed when it is installed); the ``visionllama_mm`` strategy registry
imports it when a config names the strategy.
"""
import itertools

import torch
import torch.distributed as dist
from mmengine._strategy import FSDPStrategy as _MMEngineFSDPStrategy
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from visionllama_mm.registry import STRATEGIES

__all__ = ['FSDPStrategy']


@STRATEGIES.register_module()
class FSDPStrategy(_MMEngineFSDPStrategy):
    """mmengine's ``FSDPStrategy`` whose optimizer state loads on torch >=
    2.1 and whose ``sync_module_states`` works on CPU (same arguments)."""

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        wrapper = self.model_wrapper or {}
        if (wrapper.get('sync_module_states')
                and str(wrapper.get('device_id')) == 'cpu'):
            broadcast_module_states(model)
            self.model_wrapper = dict(wrapper, sync_module_states=False)
        return super()._wrap_model(model)

    def load_optim_state_dict(self, state_dict: dict) -> None:
        """Load an optimizer state saved by :meth:`optim_state_dict`.

        Args:
            state_dict (dict): The optimizer state dict (the full one of
                ``state_dict_cfg='full'`` or this rank's local one).
        """
        optim_state_dict = FSDP.optim_state_dict_to_load(
            self.model, self.optim_wrapper.optimizer, state_dict)
        self.optim_wrapper.load_state_dict(optim_state_dict)


@torch.no_grad()
def broadcast_module_states(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of rank ``src`` to every rank, in
    place (what FSDP's ``sync_module_states`` does on GPU)."""
    if not dist.is_available() or not dist.is_initialized():
        return
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        dist.broadcast(tensor.data, src=src)

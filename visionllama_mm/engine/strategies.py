"""``FSDPStrategy``: mmengine's FSDP strategy with resuming fixed.

mmengine 0.10.7's ``FSDPStrategy.load_optim_state_dict`` calls
``FSDP.optim_state_dict_to_load(state_dict, model, optimizer)``, the
argument order of torch < 2.1; torch 2.1 and later take
``(model, optimizer, state_dict)``, so ``--resume`` of an FSDP run stops
with ``TypeError: unhashable type: 'dict'``. This subclass passes them in
torch's order; everything else is mmengine's. The shipped strategy snippets
(``configs/_base_/strategies/fsdp.py``) name it
``visionllama_mm.FSDPStrategy``.

The package does not import this module (mmengine's strategy package imports
deepspeed when it is installed); the ``visionllama_mm`` strategy registry
imports it when a config names the strategy.
"""
from mmengine._strategy import FSDPStrategy as _MMEngineFSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from visionllama_mm.registry import STRATEGIES

__all__ = ['FSDPStrategy']


@STRATEGIES.register_module()
class FSDPStrategy(_MMEngineFSDPStrategy):
    """mmengine's ``FSDPStrategy`` whose optimizer state loads on torch >=
    2.1 (same arguments)."""

    def load_optim_state_dict(self, state_dict: dict) -> None:
        """Load an optimizer state saved by :meth:`optim_state_dict`.

        Args:
            state_dict (dict): The optimizer state dict (the full one of
                ``state_dict_cfg='full'`` or this rank's local one).
        """
        optim_state_dict = FSDP.optim_state_dict_to_load(
            self.model, self.optim_wrapper.optimizer, state_dict)
        self.optim_wrapper.load_state_dict(optim_state_dict)

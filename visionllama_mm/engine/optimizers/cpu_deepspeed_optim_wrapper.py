"""``CPUDeepSpeedOptimWrapper``: mmengine's DeepSpeed wrapper for gloo.

With ZeRO stage 1 or 2, ``DeepSpeedEngine.step()`` ends by all-gathering the
updated parameter partitions into the flat parameter buffers. On a CPU the
process group is gloo, whose ``all_gather_into_tensor`` writes into views
(``split``) of that buffer; with gradient mode on, autograd refuses the
in-place write ("Output 0 of Split is a view and is being modified
inplace"). An optimizer step needs no autograd, so this wrapper runs
mmengine's step under ``torch.no_grad()``; everything else is mmengine's
``DeepSpeedOptimWrapper``. ``tools/train.py`` selects it for a
``DeepSpeedOptimWrapper`` config when CUDA is not available (NCCL's
all-gather has no such view).

The package does not import this module (it imports deepspeed, through
mmengine's strategy module); ``tools/train.py`` imports it when it selects
the wrapper.
"""
import torch
from mmengine._strategy.deepspeed import DeepSpeedOptimWrapper

from visionllama_mm.registry import OPTIM_WRAPPERS

__all__ = ['CPUDeepSpeedOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUDeepSpeedOptimWrapper(DeepSpeedOptimWrapper):
    """``DeepSpeedOptimWrapper`` whose step runs without autograd.

    Args:
        optimizer (torch.optim.Optimizer): The optimizer (DeepSpeed replaces
            it by its ZeRO optimizer when the strategy wraps the model).
    """

    def step(self, **kwargs) -> None:
        with torch.no_grad():
            super().step(**kwargs)

"""``CPUAmpOptimWrapper``: mixed precision (bfloat16 autocast) on a CPU.

mmengine's ``AmpOptimWrapper`` refuses to build without a GPU / NPU / MLU
(an assertion), so ``tools/train.py --amp`` and configs that name it stop
on a CPU machine. On a CPU, ``torch.autocast('cpu')`` supports bfloat16,
which has the exponent range of float32 and so needs no loss scaling: this
wrapper is a plain ``OptimWrapper`` whose forward runs under that autocast.
``tools/train.py`` picks it for ``--amp`` (and for an ``AmpOptimWrapper``
config) when CUDA is not available.
"""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from visionllama_mm.registry import OPTIM_WRAPPERS

__all__ = ['CPUAmpOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs the forward under bfloat16 CPU autocast.

    Args:
        dtype (str | torch.dtype): The autocast dtype; only ``'bfloat16'``
            (float16 autocast on CPU is slow and would need loss scaling).
            Defaults to ``'bfloat16'``.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                "CPUAmpOptimWrapper: dtype must be 'bfloat16' (CPU autocast "
                f'in float16 is slow and needs loss scaling), got {dtype!r}')
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                device_type='cpu', dtype=self.cast_dtype):
            yield

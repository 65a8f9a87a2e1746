"""Optimizer wrappers and their constructors."""
from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper
from .layer_decay_optim_wrapper_constructor import (
    LayerDecayOptimWrapperConstructor, layer_depth_fn)

__all__ = [
    'CPUAmpOptimWrapper', 'LayerDecayOptimWrapperConstructor', 'layer_depth_fn'
]

"""Optimizer wrappers and their constructors."""
from .cpu_amp_optim_wrapper import CPUAmpOptimWrapper
from .layer_decay_optim_wrapper_constructor import (
    LayerDecayOptimWrapperConstructor, layer_depth_fn)
from .skip_non_finite_optim_wrapper import (SkipNonFiniteAmpOptimWrapper,
                                            SkipNonFiniteOptimWrapper)

__all__ = [
    'CPUAmpOptimWrapper', 'LayerDecayOptimWrapperConstructor',
    'layer_depth_fn', 'SkipNonFiniteOptimWrapper',
    'SkipNonFiniteAmpOptimWrapper'
]

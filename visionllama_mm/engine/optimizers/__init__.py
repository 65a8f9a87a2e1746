"""Optimizer wrapper constructors."""
from .layer_decay_optim_wrapper_constructor import (
    LayerDecayOptimWrapperConstructor, layer_depth_fn)

__all__ = ['LayerDecayOptimWrapperConstructor', 'layer_depth_fn']

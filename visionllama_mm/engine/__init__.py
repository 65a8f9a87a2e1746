"""Engine pieces: layer-decay optimizer constructor, optimizer wrappers,
schedulers, losses and training hooks of the official recipes."""
from .hooks import Fp16CompressionHook, Fp16CompresssionHook
from .losses import BinarizedBCELoss
from .optimizers import (LayerDecayOptimWrapperConstructor,
                         SkipNonFiniteAmpOptimWrapper,
                         SkipNonFiniteOptimWrapper, layer_depth_fn)
from .schedulers import TimmCosineLR, timm_cosine_lr

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook',
    'LayerDecayOptimWrapperConstructor', 'layer_depth_fn',
    'SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper',
    'TimmCosineLR', 'timm_cosine_lr', 'BinarizedBCELoss'
]

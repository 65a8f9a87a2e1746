"""Engine pieces: layer-decay optimizer constructor, optimizer wrappers,
schedulers, losses and training hooks of the official recipes, and the FSDP
wrap policy."""
from .fsdp import is_llama_block, llama_block_wrap_policy
from .hooks import (Fp16CompressionHook, Fp16CompresssionHook,
                    GenerationFIDHook)
from .losses import BinarizedBCELoss
from .optimizers import (LayerDecayOptimWrapperConstructor,
                         SkipNonFiniteAmpOptimWrapper,
                         SkipNonFiniteOptimWrapper, layer_depth_fn)
from .schedulers import TimmCosineLR, timm_cosine_lr

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook', 'GenerationFIDHook',
    'LayerDecayOptimWrapperConstructor', 'layer_depth_fn',
    'SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper',
    'TimmCosineLR', 'timm_cosine_lr', 'BinarizedBCELoss', 'is_llama_block',
    'llama_block_wrap_policy'
]

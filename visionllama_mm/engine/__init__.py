"""Engine pieces: layer-decay optimizer constructor, optimizer wrappers,
schedulers, losses, training hooks of the official recipes, the resumable
sampler and the FSDP wrap policy."""
from .fsdp import is_llama_block, llama_block_wrap_policy
from .hooks import (Fp16CompressionHook, Fp16CompresssionHook,
                    GenerationFIDHook, ResumableCheckpointHook)
from .losses import BinarizedBCELoss
from .optimizers import (CPUAmpOptimWrapper, LayerDecayOptimWrapperConstructor,
                         SkipNonFiniteAmpOptimWrapper,
                         SkipNonFiniteOptimWrapper, layer_depth_fn)
from .samplers import ResumableSampler
from .schedulers import TimmCosineLR, timm_cosine_lr

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook', 'GenerationFIDHook',
    'ResumableCheckpointHook', 'ResumableSampler', 'CPUAmpOptimWrapper',
    'LayerDecayOptimWrapperConstructor', 'layer_depth_fn',
    'SkipNonFiniteOptimWrapper', 'SkipNonFiniteAmpOptimWrapper',
    'TimmCosineLR', 'timm_cosine_lr', 'BinarizedBCELoss', 'is_llama_block',
    'llama_block_wrap_policy'
]

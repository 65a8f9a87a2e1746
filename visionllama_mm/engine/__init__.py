"""Engine pieces: layer-decay optimizer constructor, training hooks and the
resumable sampler."""
from .hooks import (Fp16CompressionHook, Fp16CompresssionHook,
                    ResumableCheckpointHook)
from .optimizers import LayerDecayOptimWrapperConstructor, layer_depth_fn
from .samplers import ResumableSampler

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook',
    'LayerDecayOptimWrapperConstructor', 'ResumableCheckpointHook',
    'ResumableSampler', 'layer_depth_fn'
]

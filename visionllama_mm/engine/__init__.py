"""Engine pieces: layer-decay optimizer constructor and training hooks."""
from .hooks import Fp16CompressionHook, Fp16CompresssionHook, GenerationFIDHook
from .optimizers import LayerDecayOptimWrapperConstructor, layer_depth_fn

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook', 'GenerationFIDHook',
    'LayerDecayOptimWrapperConstructor', 'layer_depth_fn'
]

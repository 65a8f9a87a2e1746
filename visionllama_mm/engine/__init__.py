"""Engine pieces: layer-decay optimizer constructor, training hooks and the
FSDP wrap policy."""
from .fsdp import is_llama_block, llama_block_wrap_policy
from .hooks import Fp16CompressionHook, Fp16CompresssionHook
from .optimizers import LayerDecayOptimWrapperConstructor, layer_depth_fn

__all__ = [
    'Fp16CompressionHook', 'Fp16CompresssionHook',
    'LayerDecayOptimWrapperConstructor', 'layer_depth_fn', 'is_llama_block',
    'llama_block_wrap_policy'
]

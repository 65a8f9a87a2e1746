"""Training hooks."""
from .fp16_compression_hook import Fp16CompressionHook, Fp16CompresssionHook
from .generation_fid_hook import GenerationFIDHook

__all__ = ['Fp16CompressionHook', 'Fp16CompresssionHook', 'GenerationFIDHook']

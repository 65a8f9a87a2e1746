"""Training hooks."""
from .fp16_compression_hook import Fp16CompressionHook, Fp16CompresssionHook

__all__ = ['Fp16CompressionHook', 'Fp16CompresssionHook']

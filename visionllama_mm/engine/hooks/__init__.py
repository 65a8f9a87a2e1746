"""Training hooks."""
from .checkpoint_hook import (ATOMIC_BACKEND, AtomicLocalBackend,
                              ResumableCheckpointHook, atomic_write,
                              checkpoint_defect)
from .fp16_compression_hook import Fp16CompressionHook, Fp16CompresssionHook
from .fsdp_ema_hook import FSDPEMAHook
from .generation_fid_hook import GenerationFIDHook

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'Fp16CompressionHook',
    'Fp16CompresssionHook', 'FSDPEMAHook', 'GenerationFIDHook',
    'ResumableCheckpointHook', 'atomic_write', 'checkpoint_defect'
]

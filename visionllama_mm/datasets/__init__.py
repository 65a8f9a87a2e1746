"""Datasets and transforms of visionllama_mm."""
from .llama_adapter import (LLaMAAdapterCaptionTSVDataset,
                            LLaMAAdapterInstructionDataset, LoadImageOrBlank)

__all__ = [
    'LLaMAAdapterInstructionDataset', 'LLaMAAdapterCaptionTSVDataset',
    'LoadImageOrBlank'
]

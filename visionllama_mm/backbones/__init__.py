"""Backbones (registered in ``visionllama_mm.registry.MODELS``)."""
from .vision_llama import PatchEmbed, VisionLLaMA
from .vitdet_llama import LLaMADET

__all__ = ['PatchEmbed', 'VisionLLaMA', 'LLaMADET']

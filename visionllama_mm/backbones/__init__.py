"""Backbones (registered in ``visionllama_mm.registry.MODELS``)."""
from .vision_llama import PatchEmbed, VisionLLaMA

__all__ = ['PatchEmbed', 'VisionLLaMA']

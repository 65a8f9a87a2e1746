"""Backbones (registered in ``visionllama_mm.registry.MODELS``)."""
from .pyramid_vision_llama import PyramidVisionLLaMA, PyramidVisionLLaMADET

__all__ = ['PyramidVisionLLaMA', 'PyramidVisionLLaMADET']

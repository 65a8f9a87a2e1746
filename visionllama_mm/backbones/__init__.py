"""Backbones (registered in ``visionllama_mm.registry.MODELS``)."""
from .pyramid_vision_llama import PyramidVisionLLaMA, PyramidVisionLLaMADET
from .vision_llama import PatchEmbed, VisionLLaMA
from .vision_llama_deit import DeiTPatchEmbed, VisionLLaMADeiT

__all__ = [
    'PatchEmbed', 'VisionLLaMA', 'DeiTPatchEmbed', 'VisionLLaMADeiT',
    'PyramidVisionLLaMA', 'PyramidVisionLLaMADET'
]

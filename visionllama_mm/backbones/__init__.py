"""Backbones (registered in ``visionllama_mm.registry.MODELS``)."""
from .pyramid_vision_llama import PyramidVisionLLaMA, PyramidVisionLLaMADET
from .vision_llama import PatchEmbed, VisionLLaMA
from .vision_llama_deit import DeiTPatchEmbed, VisionLLaMADeiT
from .vitdet_llama import LLaMADET

__all__ = [
    'PatchEmbed', 'VisionLLaMA', 'DeiTPatchEmbed', 'VisionLLaMADeiT',
    'LLaMADET', 'PyramidVisionLLaMA', 'PyramidVisionLLaMADET'
]

"""visionllama_mm: VisionLLaMA and LLaMA-Adapter V2 for OpenMMLab."""
from .version import __version__

__all__ = ['__version__']

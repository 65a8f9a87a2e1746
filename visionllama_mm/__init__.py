"""visionllama_mm: VisionLLaMA and LLaMA-Adapter V2 for OpenMMLab.

Importing the package imports torch and mmengine only: mmdet, mmseg, mmagic
and mmpretrain are imported lazily by the modules that need them, and
nothing of another library is changed. Safe checkpoint loading for mmengine
on torch >= 2.6 is registered explicitly (the tools and the shipped configs
do it): see :func:`visionllama_mm.compat.register_safe_loading`.
"""
from .version import __version__

__all__ = ['__version__']

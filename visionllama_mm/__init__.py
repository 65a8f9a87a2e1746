"""visionllama_mm: VisionLLaMA and LLaMA-Adapter V2 for OpenMMLab.

Importing the package makes mmengine load checkpoints safely on
torch >= 2.6 (see :mod:`visionllama_mm.compat`). It imports torch and
mmengine only: mmdet, mmseg, mmagic and mmpretrain are imported lazily by
the modules that need them.
"""
from .compat import install_mmengine_safe_loading
from .version import __version__

install_mmengine_safe_loading()

__all__ = ['__version__']

"""Necks and neck layers (ViTDet ``SimpleFPN``, ``LN2d``)."""
from .ln2d import LN2d, register_ln2d_in_root
from .simple_fpn import SimpleFPN

__all__ = ['LN2d', 'SimpleFPN', 'register_ln2d_in_root']

"""``LN2d``: LayerNorm over the channel axis of NCHW feature maps.

The ViTDet heads (``SimpleFPN``, the RPN / RoI conv heads) normalise conv
features with ``norm_cfg=dict(type='LN2d')``. mmdet ships this layer only in
its ``projects/`` folder, which is not part of the wheel, so the package
provides it (docs/openmmlab.md#ln2d).

mmcv's ``build_norm_layer`` looks names up in the registry of the current
default scope and its parents, so ``LN2d`` is registered in our ``MODELS``
and, once and only if the name is free, in the mmengine root ``MODELS``: it
is then found under any default scope (``mmdet``, ``mmseg``, ...).
"""
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import Tensor

from visionllama_mm.registry import MODELS

__all__ = ['LN2d', 'register_ln2d_in_root']


@MODELS.register_module()
class LN2d(nn.LayerNorm):
    """LayerNorm over C of an (N, C, H, W) tensor.

    Mean and biased variance are taken over the channels of each pixel,
    then a per-channel affine transform (``weight``, ``bias``) is applied.
    A subclass of ``nn.LayerNorm``, so norm-aware code (weight-decay rules)
    recognises it. ``_abbr_`` keeps the attribute name that mmcv's
    ``ConvModule`` gives mmdet's ViTDet ``LN2d`` (``norm_layer``), so the
    neck / head keys of mmdet ViTDet checkpoints match. Note that mmcv's
    ``build_norm_layer`` sets eps to 1e-5 unless the config gives one.

    Args:
        num_channels (int): Number of channels C.
        eps (float): Added to the variance. Defaults to 1e-6.
        elementwise_affine (bool): Learn ``weight`` and ``bias``. Defaults
            to True.
    """

    _abbr_ = 'norm_layer'

    def __init__(self,
                 num_channels: int,
                 eps: float = 1e-6,
                 elementwise_affine: bool = True) -> None:
        super().__init__(
            num_channels, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError('LN2d expects an (N, C, H, W) tensor, got shape '
                             f'{tuple(x.shape)}')
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.elementwise_affine:
            x = x * self.weight[:, None, None] + self.bias[:, None, None]
        return x


def register_ln2d_in_root() -> bool:
    """Register :class:`LN2d` in the mmengine root ``MODELS``, idempotently.

    Nothing happens when the root already maps ``'LN2d'`` (to this class or
    to another implementation of the same layer, e.g. from an mmdet source
    checkout); the existing entry is kept.

    Returns:
        bool: True if this call added the entry.
    """
    existing = MMENGINE_MODELS.module_dict.get('LN2d')
    if existing is None:
        MMENGINE_MODELS.register_module(name='LN2d', module=LN2d)
        return True
    if existing is not LN2d:
        MMLogger.get_current_instance().debug(
            f'The mmengine root MODELS already maps LN2d to {existing!r}; '
            'keeping it.')
    return False


register_ln2d_in_root()

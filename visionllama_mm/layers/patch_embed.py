"""Patch embedding (images -> tokens) and its inverse (tokens -> maps).

One :class:`PatchEmbed` serves every VisionLLaMA layout; the layouts differ
only in the names their checkpoints use and in how the stage is normalised:

* ``conv_name='projection'``: mmcv / mmpretrain's name, in the official
  MAE, fine-tune, linear-probe, UperNet and ViTDet checkpoints;
* ``conv_name='proj'``: timm's name, in the DeiT-style plain models and the
  pyramid's stage embeddings;
* ``norm_eps``: a LayerNorm ``norm`` after the conv (the pyramid's stages);
* ``strict_size``: the plain models refuse inputs that are not multiples of
  the patch (every token is a whole patch); the pyramid floors them, as its
  official code does (the strided conv drops the remainder), and checks its
  input itself.
"""
from typing import Optional, Tuple

import torch.nn as nn
from torch import Tensor

from visionllama_mm.utils import (check_choice, check_image_input,
                                  check_positive_int)

__all__ = ['PATCH_CONV_NAMES', 'PatchEmbed', 'tokens_to_featmap']

PATCH_CONV_NAMES = ('proj', 'projection')


def tokens_to_featmap(x: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Tokens (B, H * W, C) -> a contiguous (B, C, H, W) map.

    Contiguous on purpose: a channels-last view survives convolutions (an
    FPN's outputs stay channels-last) and mmcv's ``RoIAlign`` reads its input
    as raw NCHW memory, so Mask R-CNN's RoI heads would get scrambled
    features.
    """
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *hw).contiguous()


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a strided ``nn.Conv2d`` (+ norm).

    No mmcv op is used and the input is never padded.

    Args:
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int): Token width C. Defaults to 768.
        patch_size (int): Patch side (kernel size and stride). Defaults to
            16.
        bias (bool): Bias of the conv. Defaults to True.
        conv_name (str): Attribute name of the conv, as the checkpoints
            name it: ``'projection'`` (mmcv / mmpretrain) or ``'proj'``
            (timm). Defaults to ``'projection'``.
        norm_eps (float, optional): Build a LayerNorm ``norm`` with this eps
            after the conv. Defaults to None (no norm).
        strict_size (bool): Check the input (B, in_channels, H, W) and
            refuse H, W that are not multiples of ``patch_size``. False
            floors them (the conv drops the remainder) and checks nothing.
            Defaults to True.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 768,
                 patch_size: int = 16,
                 bias: bool = True,
                 conv_name: str = 'projection',
                 norm_eps: Optional[float] = None,
                 strict_size: bool = True) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        check_positive_int('patch_size', patch_size)
        check_choice('conv_name', conv_name, PATCH_CONV_NAMES)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.conv_name = conv_name
        self.strict_size = strict_size
        self.add_module(
            conv_name,
            nn.Conv2d(
                in_channels,
                embed_dims,
                kernel_size=patch_size,
                stride=patch_size,
                bias=bias))
        self.norm = None if norm_eps is None else nn.LayerNorm(
            embed_dims, eps=norm_eps)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Embed (B, C, H, W) images as (B, N, embed_dims) tokens.

        Returns:
            tuple: Tokens (B, N, C) in raster order and the token grid
            (H / patch, W / patch).
        """
        if self.strict_size:
            check_image_input(x, self.in_channels, self.patch_size)
        x = getattr(self, self.conv_name)(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        return (x if self.norm is None else self.norm(x)), hw

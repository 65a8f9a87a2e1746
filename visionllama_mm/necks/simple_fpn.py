"""``SimpleFPN``: the ViTDet neck (arXiv 2203.16527, §3).

A plain backbone gives one stride-16 map; the neck builds strides 4, 8, 16
and 32 from it with parallel branches (no top-down path):

* stride 4: ConvT(C -> C/2, 2, 2) -> norm -> GELU -> ConvT(C/2 -> C/4, 2, 2)
* stride 8: ConvT(C -> C/2, 2, 2)
* stride 16: identity
* stride 32: max-pool 2 x 2

Each level then gets a 1x1 lateral ``ConvModule`` and a 3x3 ``ConvModule``
(norm, no activation; no conv bias when a norm is present). Extra levels up
to ``num_outs`` max-pool the last output with kernel 1 and stride 2.
Re-implemented from the description in docs/openmmlab.md#simplefpn
because mmdet's version lives in ``projects/`` (not in the wheel).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from visionllama_mm.registry import MODELS
from .ln2d import register_ln2d_in_root

__all__ = ['SimpleFPN']


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Simple feature pyramid from one stride-16 map (ViTDet).

    Args:
        backbone_channel (int): Channels C of the backbone map (divisible
            by 4).
        in_channels (Sequence[int]): Channels of the four branch outputs,
            normally ``[C // 4, C // 2, C, C]``.
        out_channels (int): Channels of every output level.
        num_outs (int): Number of output levels (>= 4); levels beyond the
            fourth are max-pooled from the previous one.
        conv_cfg (dict, optional): Config of the lateral / output convs.
            Defaults to None (Conv2d).
        norm_cfg (dict, optional): Norm of the stride-4 branch and of the
            lateral / output convs, e.g. ``dict(type='LN2d')``. Defaults to
            None (no norm; the stride-4 branch then has no norm either).
        act_cfg (dict, optional): Activation of the lateral / output convs.
            Defaults to None.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        register_ln2d_in_root()
        in_channels = list(in_channels)
        if backbone_channel % 4 != 0:
            raise ValueError('backbone_channel must be divisible by 4, got '
                             f'{backbone_channel}')
        expected = [
            backbone_channel // 4, backbone_channel // 2, backbone_channel,
            backbone_channel
        ]
        if in_channels != expected:
            raise ValueError(f'in_channels must be {expected} for '
                             f'backbone_channel={backbone_channel}, got '
                             f'{in_channels}')
        if num_outs < len(in_channels):
            raise ValueError(f'num_outs must be >= {len(in_channels)}, got '
                             f'{num_outs}')
        self.backbone_channel = backbone_channel
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs

        c = backbone_channel
        up4 = [nn.ConvTranspose2d(c, c // 2, 2, 2)]
        if norm_cfg is not None:
            up4.append(build_norm_layer(norm_cfg, c // 2)[1])
        up4 += [nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2)]
        self.fpn1 = nn.Sequential(*up4)
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

        conv_kwargs = dict(
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            inplace=False)
        self.lateral_convs = nn.ModuleList(
            ConvModule(ch, out_channels, 1, **conv_kwargs)
            for ch in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(
                out_channels, out_channels, 3, padding=1, **conv_kwargs)
            for _ in in_channels)

    def forward(self, inputs: Union[Tensor,
                                    Sequence[Tensor]]) -> Tuple[Tensor, ...]:
        """Build the pyramid.

        Args:
            inputs (Tensor | Sequence[Tensor]): The stride-16 map
                (B, C, H, W), or a tuple whose first element is it.

        Returns:
            tuple[Tensor]: ``num_outs`` maps of ``out_channels`` channels at
            strides 4, 8, 16, 32 (, 64, ...).
        """
        x = inputs if isinstance(inputs, Tensor) else inputs[0]
        feats = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [
            fpn_conv(lateral(feat)) for feat, lateral, fpn_conv in zip(
                feats, self.lateral_convs, self.fpn_convs)
        ]
        for _ in range(self.num_outs - self.num_ins):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)

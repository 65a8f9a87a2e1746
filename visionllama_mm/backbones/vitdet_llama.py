"""``LLaMADET``: the plain VisionLLaMA as a ViTDet backbone.

ViTDet (arXiv 2203.16527) runs a plain backbone at 1024 x 1024 with most
blocks attending inside non-overlapping windows and a few blocks attending
globally. VisionLLaMA's detection backbone (docs/dense.md#vitdet-backbone)
keeps the plain model's parameters (so MAE checkpoints load with
``prefix='backbone.'``) and changes only the attention pattern:

* **window blocks** (``window_block_indexes``): ``x_n = ln1(x)`` is laid out
  as (B, H, W, C), zero-padded bottom/right to a multiple of
  ``window_size`` (after the norm, before qkv: padded tokens are zero
  vectors whose keys/values equal the qkv bias), partitioned into
  ``window_size`` x ``window_size`` windows (raster order inside each)
  with window-local RoPE positions ``x = c, y = r`` in ``0 .. ws - 1``;
  attention runs per window, and the result is un-partitioned and cropped.
  Padded keys are attended to without a mask (official, like ViTDet);
  ``mask_window_padding=True`` masks them.
* **global blocks** (all others): full attention with integer RoPE
  positions of the runtime (H, W) grid (non-square grids are exact; the
  official code assumes a square grid).

The output is the stride-16 map (B, C, H/16, W/16) of the last block.
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from visionllama_mm.layers import RoPEAttention
from visionllama_mm.layers.attention import (window_padding_mask,
                                             window_partition,
                                             window_unpartition)
from visionllama_mm.registry import MODELS
from .vision_llama import VisionLLaMA

__all__ = [
    'WindowRoPEAttention', 'LLaMADET', 'window_partition', 'window_unpartition'
]


class WindowRoPEAttention(RoPEAttention):
    """RoPE attention inside non-overlapping windows (ViTDet window block).

    Same parameters (``qkv``, ``proj``) as :class:`RoPEAttention`. The input
    tokens (already normalised by the block's ``ln1``) are padded and
    partitioned here, i.e. before the qkv projection.

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Attention heads.
        window_size (int): Window side in tokens. Defaults to 14.
        mask_window_padding (bool): Mask the zero-padded keys. Defaults to
            False (official: padded tokens take part in attention).
        **kwargs: Further :class:`RoPEAttention` arguments.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 window_size: int = 14,
                 mask_window_padding: bool = False,
                 **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.window_size = window_size
        self.mask_window_padding = mask_window_padding

    def extra_repr(self) -> str:
        return (f'window_size={self.window_size}, '
                f'mask_window_padding={self.mask_window_padding}')

    def forward(self,
                x: Tensor,
                hw: Tuple[int, int] = None,
                rope: Optional[Tuple[Tensor, Tensor]] = None,
                attn_mask: Optional[Tensor] = None,
                num_prefix_tokens: int = 0) -> Tensor:
        """Window attention over tokens (B, H * W, C).

        Args:
            x (Tensor): Normalised tokens (B, H * W, C) in raster order.
            hw (tuple[int, int]): Token grid (H, W).
            rope (tuple[Tensor, Tensor], optional): Window-local tables
                (ws * ws, head_dim).
            attn_mask (Tensor, optional): Not supported (must be None).
            num_prefix_tokens (int): Must be 0 (no class token).

        Returns:
            Tensor: (B, H * W, C).
        """
        if hw is None:
            raise ValueError('WindowRoPEAttention needs the token grid hw')
        if attn_mask is not None or num_prefix_tokens:
            raise ValueError('window attention supports neither attn_mask '
                             'nor prefix tokens')
        B, N, C = x.shape
        H, W = hw
        if N != H * W:
            raise ValueError(f'{N} tokens do not form the grid {H}x{W}')
        windows, padded_hw = window_partition(
            x.view(B, H, W, C), self.window_size)
        mask = None
        if self.mask_window_padding:
            mask = window_padding_mask(B, hw, padded_hw, self.window_size,
                                       x.device)
        out = super().forward(windows, rope=rope, attn_mask=mask)
        out = window_unpartition(out, self.window_size, padded_hw, hw)
        return out.reshape(B, N, C)


@MODELS.register_module()
class LLaMADET(VisionLLaMA):
    """Plain VisionLLaMA with ViTDet window / global attention blocks.

    Takes every argument of :class:`VisionLLaMA` (same parameter names,
    so MAE checkpoints load with ``prefix='backbone.'``), with the ViTDet
    defaults ``out_type='featmap'``, ``final_norm=False`` and
    ``out_indices=-1``, plus:

    Args:
        window_size (int): Window side of the window blocks, in tokens.
            Defaults to 14 (the pretraining grid at 224 px).
        window_block_indexes (Sequence[int], optional): Blocks that attend
            inside windows; the others attend globally. Defaults to None:
            every block except the last of each quarter of the depth
            (``(0, 1, 3, 4, 6, 7, 9, 10)`` for 12 blocks, global blocks 5,
            11, 17, 23 for 24 blocks).
        mask_window_padding (bool): Mask the zero-padded tokens of window
            blocks. Defaults to False (official).
        **kwargs: :class:`VisionLLaMA` arguments (``arch``, ``img_size``,
            ``drop_path_rate``, ``init_cfg``, ...). ``with_cls_token`` must
            stay False.
    """

    def __init__(self,
                 *args,
                 window_size: int = 14,
                 window_block_indexes: Optional[Sequence[int]] = None,
                 mask_window_padding: bool = False,
                 out_type: str = 'featmap',
                 final_norm: bool = False,
                 out_indices=-1,
                 **kwargs) -> None:
        if kwargs.get('with_cls_token', False):
            raise ValueError('LLaMADET does not support with_cls_token=True '
                             '(window attention has no class token)')
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError('window_size must be a positive int, got '
                             f'{window_size!r}')
        # _build_layer (called by the base constructor) reads these
        self.window_size = window_size
        self.mask_window_padding = mask_window_padding
        self._window_block_spec = window_block_indexes
        super().__init__(
            *args,
            out_type=out_type,
            final_norm=final_norm,
            out_indices=out_indices,
            **kwargs)

    @property
    def window_block_indexes(self) -> Tuple[int, ...]:
        """Sorted indexes of the window blocks (the others are global)."""
        L = self.num_layers
        if self._window_block_spec is None:
            step = max(L // 4, 1)
            glob = {min((k + 1) * step, L) - 1 for k in range(4)}
            return tuple(i for i in range(L) if i not in glob)
        resolved = []
        for i in self._window_block_spec:
            if not isinstance(i, int) or not -L <= i < L:
                raise ValueError(f'window_block_indexes entry {i!r} is out '
                                 f'of range for {L} layers')
            resolved.append(i % L)
        return tuple(sorted(set(resolved)))

    def _build_layer(self, index: int, cfg: dict) -> nn.Module:
        """A :class:`VisionLLaMABlock`, with window attention if ``index``
        is a window block."""
        if self.is_window_block(index):
            cfg['attn'] = WindowRoPEAttention(
                cfg['dim'],
                cfg['num_heads'],
                window_size=self.window_size,
                mask_window_padding=self.mask_window_padding,
                qkv_bias=cfg.get('qkv_bias', True))
        return super()._build_layer(index, cfg)

    def is_window_block(self, index: int) -> bool:
        """Whether block ``index`` attends inside windows."""
        return index in self.window_block_indexes

    def _layer_kwargs(self, index: int, hw: Tuple[int, int],
                      rope: Tuple[Tensor, Tensor]) -> dict:
        if self.is_window_block(index):
            ws = self.window_size
            window_rope = self.rope.grid(ws, ws, device=rope[0].device)
            return dict(hw=hw, rope=window_rope)
        return super()._layer_kwargs(index, hw, rope)

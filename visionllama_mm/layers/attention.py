"""Multi-head self-attention with 2D RoPE on queries and keys.

Attention runs through ``F.scaled_dot_product_attention`` (the fused path)
or a manual softmax path of identical math, kept for export and for tests.
The switch follows timm: a module attribute ``fused_attn`` whose default
comes from :func:`use_fused_attn` (environment variable
``VISIONLLAMA_FUSED_ATTN=0`` turns the fused path off globally).
The scale is always ``head_dim ** -0.5`` (no ``qk_scale``: the upstream
``qk_scale`` paths are broken, docs/visionllama.md#official-quirks item 14).
"""
import os
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .rope import apply_rope

__all__ = [
    'use_fused_attn', 'head_dim_of', 'scaled_dot_product', 'window_partition',
    'window_unpartition', 'window_padding_mask', 'RoPEAttention'
]


def use_fused_attn() -> bool:
    """Whether new attention modules use SDPA (env VISIONLLAMA_FUSED_ATTN)."""
    return os.environ.get('VISIONLLAMA_FUSED_ATTN', '1') != '0'


def head_dim_of(dim: int, num_heads: int) -> int:
    """``dim // num_heads``; a ValueError unless ``num_heads`` divides it."""
    if dim % num_heads != 0:
        raise ValueError(f'dim ({dim}) must be divisible by num_heads '
                         f'({num_heads})')
    return dim // num_heads


def scaled_dot_product(q: Tensor,
                       k: Tensor,
                       v: Tensor,
                       attn_mask: Optional[Tensor] = None,
                       dropout_p: float = 0.,
                       fused: bool = True) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v for (B, heads, N, d) tensors.

    Args:
        q (Tensor): Queries (B, h, Nq, d).
        k (Tensor): Keys (B, h, Nk, d).
        v (Tensor): Values (B, h, Nk, d).
        attn_mask (Tensor, optional): Boolean mask broadcastable to
            (B, h, Nq, Nk), True where attention is allowed. Defaults to None.
        dropout_p (float): Attention dropout (training only). Defaults to 0.
        fused (bool): Use ``F.scaled_dot_product_attention``. Defaults to
            True.

    Returns:
        Tensor: (B, h, Nq, d).
    """
    if fused:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    attn = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn.masked_fill(~attn_mask, float('-inf'))
    attn = attn.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def window_partition(x: Tensor, window_size: int) -> Tuple[Tensor, tuple]:
    """Zero-pad (B, H, W, C) bottom/right and cut it into windows.

    Args:
        x (Tensor): (B, H, W, C) map.
        window_size (int): Window side ws.

    Returns:
        tuple: Windows (B * nh * nw, ws * ws, C), batch-major then raster
        order of the windows and raster order inside each, and the padded
        size (Hp, Wp).
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    nh, nw = Hp // window_size, Wp // window_size
    x = x.view(B, nh, window_size, nw, window_size, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)
    return x, (Hp, Wp)


def window_unpartition(windows: Tensor, window_size: int,
                       padded_hw: Tuple[int, int], hw: Tuple[int,
                                                             int]) -> Tensor:
    """Inverse of :func:`window_partition`, cropped to (B, H, W, C)."""
    Hp, Wp = padded_hw
    H, W = hw
    nh, nw = Hp // window_size, Wp // window_size
    C = windows.shape[-1]
    x = windows.view(-1, nh, nw, window_size, window_size, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, Hp, Wp, C)
    return x[:, :H, :W]


def window_padding_mask(batch: int, hw: Tuple[int, int],
                        padded_hw: Tuple[int, int], window_size: int,
                        device: torch.device) -> Optional[Tensor]:
    """Boolean key mask of :func:`window_partition` windows, True = real.

    Returns:
        Tensor | None: (B * nW, 1, 1, ws * ws), batch-major like the
        windows; None when nothing is padded. Every window holds at least
        one real token because the padding is < ws.
    """
    if tuple(hw) == tuple(padded_hw):
        return None
    valid = torch.zeros(padded_hw, dtype=torch.bool, device=device)
    valid[:hw[0], :hw[1]] = True
    keys, _ = window_partition(valid[None, :, :, None], window_size)
    return keys[:, None, None, :, 0].repeat(batch, 1, 1, 1)


class RoPEAttention(nn.Module):
    """Multi-head self-attention whose q and k are rotated by 2D RoPE.

    Attribute names (``qkv`` with rows [q | k | v] head-major, ``proj``)
    match mmpretrain, timm and the upstream checkpoints.

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Number of heads; ``dim / num_heads`` must be a
            multiple of 4 for 2D RoPE.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        proj_bias (bool): Bias of the output projection. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.
        proj_drop (float): Output dropout. Defaults to 0.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 proj_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim_of(dim, num_heads)
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self,
                x: Tensor,
                rope: Optional[Tuple[Tensor, Tensor]] = None,
                attn_mask: Optional[Tensor] = None,
                num_prefix_tokens: int = 0) -> Tensor:
        """Attend over ``x`` (B, N, C).

        Args:
            x (Tensor): Tokens (B, N, C).
            rope (tuple[Tensor, Tensor], optional): (cos, sin) tables of
                shape (N - num_prefix_tokens, d) or per sample
                (B, N - num_prefix_tokens, d). None: no rotation.
            attn_mask (Tensor, optional): Boolean mask, True = attend.
            num_prefix_tokens (int): Leading tokens left unrotated.

        Returns:
            Tensor: (B, N, C).
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
        qk = qkv[:2]
        if rope is not None:  # q and k in one pass
            qk = apply_rope(qk, *rope, num_prefix_tokens=num_prefix_tokens)
        q, k = qk.unbind(0)
        v = qkv[2]
        x = scaled_dot_product(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.,
            fused=self.fused_attn)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

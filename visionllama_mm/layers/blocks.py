"""VisionLLaMA transformer blocks (pre-norm, RoPE attention, SwiGLU).

Two upstream block styles exist and keep their own parameter names so that
official checkpoints load without renaming
(docs/visionllama.md#checkpoint-layouts):

* :class:`VisionLLaMABlock` - the mmpretrain style used by MAE, fine-tuning,
  linear probing, UperNet and ViTDet: ``ln1``, ``attn.{qkv,proj}``, ``ln2``,
  ``ffn.{w12,w3}`` with biases, no layer scale, DropPath on the attention
  branch only (official; ``ffn_drop_path=True`` adds it to the FFN).
* :class:`LayerScaleBlock` - the timm/deit style used by the supervised
  plain models, the pyramid (with LSA / GSA attention) and DiT-like models:
  ``norm1``, ``attn``, ``gamma_1``, ``norm2``, ``mlp.{c_fc1,c_fc2,c_proj}``
  without bias, ``gamma_2``, DropPath on both branches.

Both take their attention module as an argument (the ViTDet window blocks,
the pyramid's LSA / GSA), defaulting to a global :class:`RoPEAttention`.
Layer scale belongs to the block alone, as in timm's ``EvaBlock``: the
attention and the FFN return their unscaled outputs.
"""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .attention import RoPEAttention
from .norm_mlp import build_ffn, build_norm

__all__ = [
    'DropPath', 'VisionLLaMABlock', 'LayerScaleBlock', 'init_linear_norm_timm'
]


def init_linear_norm_timm(m: nn.Module) -> None:
    """timm init of one module: Linear trunc_normal(0.02) / bias 0, LN 1 / 0.

    For ``model.apply`` (other module types are left untouched).
    """
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample.

    Args:
        drop_prob (float): Probability of dropping the branch. Defaults to 0.
    """

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep


class VisionLLaMABlock(nn.Module):
    """mmpretrain-style VisionLLaMA block.

    ``h = x + DropPath(attn(ln1(x)))``; ``y = h + ffn(ln2(h))`` (the FFN
    branch gets DropPath only with ``ffn_drop_path=True``).

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Attention heads.
        ffn_hidden (int): FFN hidden width (SwiGLU: see
            :func:`~visionllama_mm.layers.swiglu.swiglu_hidden_dim`).
        qkv_bias (bool): Bias of qkv. Defaults to True.
        drop_path (float): DropPath rate. Defaults to 0.
        ffn_drop_path (bool): Also apply DropPath to the FFN branch.
            Defaults to False (official).
        norm_eps (float): Norm eps. Defaults to 1e-6.
        norm_type (str): ``'LN'`` (official) or ``'RMSNorm'`` (ablation).
            Defaults to ``'LN'``.
        ffn_type (str): ``'swiglu'`` (official, ``ffn.{w12, w3}``) or
            ``'mlp'`` (ablation: GELU ``ffn.{fc1, fc2}``). Defaults to
            ``'swiglu'``.
        attn (nn.Module, optional): Attention module called on the
            normalised tokens with the block's keyword arguments (e.g. a
            window attention); None builds a global :class:`RoPEAttention`
            with ``qkv_bias``. Defaults to None.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 ffn_hidden: int,
                 qkv_bias: bool = True,
                 drop_path: float = 0.,
                 ffn_drop_path: bool = False,
                 norm_eps: float = 1e-6,
                 norm_type: str = 'LN',
                 ffn_type: str = 'swiglu',
                 attn: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.ln1 = build_norm(norm_type, dim, eps=norm_eps)
        self.attn = attn if attn is not None else RoPEAttention(
            dim, num_heads, qkv_bias=qkv_bias)
        self.ln2 = build_norm(norm_type, dim, eps=norm_eps)
        self.ffn = build_ffn(
            ffn_type, dim, ffn_hidden, bias=True, layout='fused')
        self.drop_path = DropPath(drop_path)
        self.ffn_drop_path = DropPath(drop_path if ffn_drop_path else 0.)

    def forward(self, x: Tensor, **attn_kwargs) -> Tensor:
        x = x + self.drop_path(self.attn(self.ln1(x), **attn_kwargs))
        return x + self.ffn_drop_path(self.ffn(self.ln2(x)))


class LayerScaleBlock(nn.Module):
    """timm/deit-style block with layer scale.

    ``x = x + DropPath(gamma_1 * attn(norm1(x)))``;
    ``x = x + DropPath(gamma_2 * mlp(norm2(x)))``.

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Attention heads (used when ``attn`` is None).
        ffn_hidden (int): FFN hidden width.
        attn (nn.Module, optional): Attention module called on the
            normalised tokens with the block's keyword arguments (e.g. the
            pyramid's LSA / GSA); None builds a global
            :class:`RoPEAttention`. Defaults to None.
        qkv_bias (bool): Bias of the default attention's qkv. Defaults to
            True.
        mlp_bias (bool): Biases of the FFN. Defaults to False.
        drop_path (float): DropPath rate. Defaults to 0.
        layer_scale (float, optional): Initial value of ``gamma_1/2``;
            ``None`` disables layer scale. Defaults to 1e-4.
        norm_eps (float): Norm eps. Defaults to 1e-6.
        norm_type (str): ``'LN'`` (official) or ``'RMSNorm'`` (ablation).
            Defaults to ``'LN'``.
        ffn_type (str): ``'swiglu'`` (official, ``mlp.{c_fc1, c_fc2,
            c_proj}``) or ``'mlp'`` (ablation: GELU ``mlp.{fc1, fc2}``).
            Defaults to ``'swiglu'``.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 ffn_hidden: int,
                 attn: Optional[nn.Module] = None,
                 qkv_bias: bool = True,
                 mlp_bias: bool = False,
                 drop_path: float = 0.,
                 layer_scale: Optional[float] = 1e-4,
                 norm_eps: float = 1e-6,
                 norm_type: str = 'LN',
                 ffn_type: str = 'swiglu') -> None:
        super().__init__()
        self.norm1 = build_norm(norm_type, dim, eps=norm_eps)
        self.attn = attn if attn is not None else RoPEAttention(
            dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = build_norm(norm_type, dim, eps=norm_eps)
        self.mlp = build_ffn(ffn_type, dim, ffn_hidden, bias=mlp_bias)
        self.drop_path = DropPath(drop_path)
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim, ), layer_scale))
            self.gamma_2 = nn.Parameter(torch.full((dim, ), layer_scale))
        else:
            self.gamma_1 = self.gamma_2 = None

    @staticmethod
    def _scale(branch: Tensor, gamma: Optional[Tensor]) -> Tensor:
        return branch if gamma is None else gamma * branch

    def forward(self, x: Tensor, **attn_kwargs) -> Tensor:
        x = x + self.drop_path(
            self._scale(self.attn(self.norm1(x), **attn_kwargs), self.gamma_1))
        return x + self.drop_path(
            self._scale(self.mlp(self.norm2(x)), self.gamma_2))

"""Norm and MLP alternatives for the ablations (RMSNorm, GELU MLP).

VisionLLaMA uses LayerNorm and a SwiGLU FFN everywhere (the released models;
``docs`` of the backbones). The paper's ablations (Table 11) compare them with
RMSNorm and with the ViT / DiT GELU MLP; these are the switches:

* :func:`build_norm` - ``'LN'`` (``nn.LayerNorm``, weight and bias) or
  ``'RMSNorm'`` (``nn.RMSNorm``, weight only: ``x / rms(x) * w``);
* :class:`Mlp` - ``fc2(act(fc1(x)))`` with hidden width usually 4 C, the
  ViT (exact GELU) / DiT (tanh-approximated GELU) feed-forward network, with
  timm's parameter names ``fc1`` / ``fc2``;
* :func:`build_ffn` - ``'swiglu'`` or ``'mlp'`` by name.
"""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from visionllama_mm.utils import check_choice
from .swiglu import SwiGLU

__all__ = ['NORM_TYPES', 'FFN_TYPES', 'build_norm', 'Mlp', 'build_ffn']

NORM_TYPES = ('LN', 'RMSNorm')
FFN_TYPES = ('swiglu', 'mlp')
MLP_ACTS = ('gelu', 'gelu_tanh')


def build_norm(norm_type: str,
               dim: int,
               eps: float = 1e-6,
               elementwise_affine: bool = True) -> nn.Module:
    """A LayerNorm (``'LN'``) or an RMSNorm (``'RMSNorm'``) over ``dim``.

    Args:
        norm_type (str): ``'LN'`` or ``'RMSNorm'``.
        dim (int): Normalised (last) dimension.
        eps (float): Added to the variance / mean square. Defaults to 1e-6.
        elementwise_affine (bool): Learnable weight (and, for LN, bias).
            Defaults to True.
    """
    check_choice('norm_type', norm_type, NORM_TYPES)
    if norm_type == 'LN':
        return nn.LayerNorm(
            dim, eps=eps, elementwise_affine=elementwise_affine)
    return nn.RMSNorm(dim, eps=eps, elementwise_affine=elementwise_affine)


class Mlp(nn.Module):
    """Two-layer GELU MLP ``fc2(GELU(fc1(x)))`` (ViT / DiT FFN).

    Args:
        in_features (int): Input and output width.
        hidden_features (int): Hidden width (4 C in ViT and DiT).
        bias (bool): Biases of both layers. Defaults to True.
        act (str): ``'gelu'`` (exact, ViT) or ``'gelu_tanh'`` (DiT).
            Defaults to ``'gelu'``.
        drop (float): Dropout after the output projection. Defaults to 0.
    """

    def __init__(self,
                 in_features: int,
                 hidden_features: int,
                 bias: bool = True,
                 act: str = 'gelu',
                 drop: float = 0.) -> None:
        super().__init__()
        check_choice('act', act, MLP_ACTS)
        self.approximate = 'tanh' if act == 'gelu_tanh' else 'none'
        self.hidden_features = hidden_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C) -> (..., C)``."""
        x = F.gelu(self.fc1(x), approximate=self.approximate)
        return self.drop(self.fc2(x))


def build_ffn(ffn_type: str,
              dim: int,
              hidden: int,
              bias: bool,
              layout: str = 'split',
              act: str = 'gelu') -> nn.Module:
    """The block FFN: a :class:`SwiGLU` or a GELU :class:`Mlp`.

    Args:
        ffn_type (str): ``'swiglu'`` (VisionLLaMA) or ``'mlp'`` (ViT).
        dim (int): Token width C.
        hidden (int): Hidden width.
        bias (bool): Biases of the linear layers.
        layout (str): SwiGLU parameter layout (``'split'`` / ``'fused'``).
            Defaults to ``'split'``.
        act (str): Activation of the MLP. Defaults to ``'gelu'``.
    """
    check_choice('ffn_type', ffn_type, FFN_TYPES)
    if ffn_type == 'swiglu':
        return SwiGLU(dim, hidden, bias=bias, layout=layout)
    return Mlp(dim, hidden, bias=bias, act=act)

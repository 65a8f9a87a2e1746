"""SwiGLU feed-forward network, ``w3(SiLU(gate(x)) * up(x))``.

Two hidden-width rules exist (docs/visionllama.md#swiglu-hidden-width):

* ``'llama'`` - LLaMA and the paper: ``ceil256(floor(8 C / 3))``;
* ``'mmpretrain'`` - the mmpretrain-style VisionLLaMA (MAE/FT/LP/UperNet/
  ViTDet) applies the 8/3 rule to the 4C feed-forward width:
  ``ceil256(floor(8 * 4C / 3))`` (8192 for C = 768). The released MAE
  weights need it.

Two parameter layouts keep the upstream key names: ``'fused'`` (mmpretrain:
``w12`` holding [gate | up] rows, then ``w3``) and ``'split'`` (timm/deit,
pyramid and DiT: ``c_fc1`` gate, ``c_fc2`` up, ``c_proj``).
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from visionllama_mm.utils import check_choice

__all__ = ['FFN_HIDDEN_RULES', 'swiglu_hidden_dim', 'silu_gate', 'SwiGLU']

FFN_HIDDEN_RULES = ('llama', 'mmpretrain')
SWIGLU_LAYOUTS = ('split', 'fused')


def swiglu_hidden_dim(dim: int,
                      rule: str = 'llama',
                      ffn_channels: Optional[int] = None,
                      multiple_of: int = 256) -> int:
    """Hidden width of a SwiGLU of embedding dimension ``dim``.

    Args:
        dim (int): Embedding dimension C.
        rule (str): ``'llama'`` or ``'mmpretrain'``. Defaults to ``'llama'``.
        ffn_channels (int, optional): Feed-forward width the 8/3 rule is
            applied to under ``'mmpretrain'``. Defaults to 4 * dim.
        multiple_of (int): Round up to a multiple of this. Defaults to 256.

    Returns:
        int: The hidden width.
    """
    check_choice('ffn_hidden_rule', rule, FFN_HIDDEN_RULES)
    base = dim if rule == 'llama' else (ffn_channels or 4 * dim)
    hidden = int(8 * base / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class _SiLUGate(torch.autograd.Function):
    """``SiLU(gate) * up`` that keeps only ``gate`` and ``up`` for backward.

    Autograd would also keep ``SiLU(gate)``; recomputing it from ``gate`` in
    backward saves one hidden-width activation per block (the SwiGLU then
    stores no more than a GELU MLP of the same parameter count).
    """

    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)  # in place on a fresh tensor

    @staticmethod
    def backward(ctx, grad: Tensor):
        gate, up = ctx.saved_tensors
        # aten's fused SiLU derivative, sig * (1 + g * (1 - sig)), is one
        # pass instead of six elementwise ones (the backward is memory-bound)
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, F.silu(gate).mul_(grad)


def silu_gate(gate: Tensor, up: Tensor) -> Tensor:
    """``SiLU(gate) * up``; memory-lean in training (see ``_SiLUGate``).

    Under ``torch.jit.trace`` (and so legacy ONNX export) it records the
    plain ops whatever the grad mode, so the trace does not depend on it.
    """
    if torch.jit.is_tracing():
        return F.silu(gate) * up
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return _SiLUGate.apply(gate, up)
    return F.silu(gate).mul_(up)


class SwiGLU(nn.Module):
    """SwiGLU FFN: ``proj(SiLU(gate(x)) * up(x))``.

    Args:
        in_features (int): Input and output width.
        hidden_features (int): Hidden width.
        bias (bool): Biases on all linear layers. Defaults to False.
        layout (str): ``'split'`` (``c_fc1``, ``c_fc2``, ``c_proj``) or
            ``'fused'`` (``w12`` = [gate | up], ``w3``). Defaults to
            ``'split'``.
        drop (float): Dropout after the output projection. Defaults to 0.
    """

    def __init__(self,
                 in_features: int,
                 hidden_features: int,
                 bias: bool = False,
                 layout: str = 'split',
                 drop: float = 0.) -> None:
        super().__init__()
        check_choice('layout', layout, SWIGLU_LAYOUTS)
        self.layout = layout
        self.hidden_features = hidden_features
        if layout == 'split':
            self.c_fc1 = nn.Linear(in_features, hidden_features, bias=bias)
            self.c_fc2 = nn.Linear(in_features, hidden_features, bias=bias)
            self.c_proj = nn.Linear(hidden_features, in_features, bias=bias)
        else:
            self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
            self.w3 = nn.Linear(hidden_features, in_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., C) -> (..., C)``."""
        if self.layout == 'split':
            x = self.c_proj(silu_gate(self.c_fc1(x), self.c_fc2(x)))
        else:
            # two products with the (contiguous) row halves of w12 instead of
            # chunking one product: SiLU and the gating then run on
            # contiguous tensors (~25% faster training step on CPU)
            h = self.hidden_features
            w, b = self.w12.weight, self.w12.bias
            gate = F.linear(x, w[:h], None if b is None else b[:h])
            up = F.linear(x, w[h:], None if b is None else b[h:])
            x = self.w3(silu_gate(gate, up))
        return self.drop(x)

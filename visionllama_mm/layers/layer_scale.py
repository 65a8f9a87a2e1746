"""Layer scale folded into the output projection of a residual branch."""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['scaled_linear']


def scaled_linear(linear: nn.Linear,
                  x: Tensor,
                  scale: Optional[Tensor] = None) -> Tensor:
    """``scale * linear(x)`` with ``scale`` folded into the weight rows.

    ``gamma * (x W^T + b) == x (diag(gamma) W)^T + gamma b``: the product
    with the (C_out, C_in) weight costs nothing next to the matmul, and,
    unlike an elementwise ``gamma * y``, autograd keeps no (B, N, C)
    activation for the gradient of ``gamma`` (it comes from the weight
    gradient the matmul produces anyway).

    Args:
        linear (nn.Linear): The branch's output projection.
        x (Tensor): Its input (..., C_in).
        scale (Tensor, optional): Per-output-channel scale (C_out, ), e.g.
            a block's layer scale. None: plain ``linear(x)``.

    Returns:
        Tensor: (..., C_out).
    """
    if scale is None:
        return linear(x)
    bias = None if linear.bias is None else linear.bias * scale
    return F.linear(x, linear.weight * scale[:, None], bias)

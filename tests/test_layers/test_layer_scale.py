import pytest
import torch
import torch.nn as nn

from visionllama_mm.layers import LayerScaleBlock, scaled_linear


@pytest.mark.parametrize('bias', [True, False])
def test_scaled_linear_equals_scaling_the_output(bias):
    torch.manual_seed(0)
    linear = nn.Linear(8, 6, bias=bias).double()
    x = torch.randn(2, 5, 8, dtype=torch.double, requires_grad=True)
    gamma = torch.randn(6, dtype=torch.double, requires_grad=True)
    out = scaled_linear(linear, x, gamma)
    ref = gamma * linear(x)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, gamma, *linear.parameters()], grad)
    want = torch.autograd.grad(ref, [x, gamma, *linear.parameters()], grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    torch.testing.assert_close(scaled_linear(linear, x), linear(x))


def test_layer_scale_block_matches_the_formula():
    """x + gamma_1 * attn(norm1(x)); then + gamma_2 * mlp(norm2(x))."""
    torch.manual_seed(0)
    block = LayerScaleBlock(16, 2, 32, layer_scale=0.5).double().eval()
    with torch.no_grad():
        block.gamma_1.uniform_(-1, 1)
        block.gamma_2.uniform_(-1, 1)
    x = torch.randn(2, 9, 16, dtype=torch.double)
    y = x + block.gamma_1 * block.attn(block.norm1(x))
    y = y + block.gamma_2 * block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x), y)

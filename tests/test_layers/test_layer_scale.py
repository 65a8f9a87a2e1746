"""Layer scale lives in the block: gamma_1 / gamma_2 scale the branches."""
import torch

from visionllama_mm.layers import LayerScaleBlock


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

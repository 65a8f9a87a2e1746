"""Tests of SwiGLU, DropPath and the two VisionLLaMA block styles."""
import pytest
import torch
import torch.nn.functional as F

from visionllama_mm.layers import (DropPath, LayerScaleBlock,
                                   RotaryEmbedding2D, SwiGLU, VisionLLaMABlock,
                                   silu_gate, swiglu_hidden_dim)


@pytest.mark.parametrize('dim,hidden', [(64, 256), (96, 256), (128, 512),
                                        (192, 512), (256, 768), (384, 1024),
                                        (512, 1536), (768, 2048), (1024, 2816),
                                        (1152, 3072)])
def test_llama_hidden_rule(dim, hidden):
    assert swiglu_hidden_dim(dim, 'llama') == hidden


@pytest.mark.parametrize('dim,ffc,hidden', [(768, 2304, 6144),
                                            (768, 3072, 8192),
                                            (1024, 4096, 11008),
                                            (1280, 5120, 13824)])
def test_mmpretrain_hidden_rule(dim, ffc, hidden):
    assert swiglu_hidden_dim(dim, 'mmpretrain', ffn_channels=ffc) == hidden


def test_hidden_rule_invalid():
    with pytest.raises(ValueError, match="ffn_hidden_rule.*'llama'"):
        swiglu_hidden_dim(64, 'gpt')
    with pytest.raises(ValueError, match='layout'):
        SwiGLU(8, 16, layout='packed')


def test_swiglu_layouts_agree():
    torch.manual_seed(0)
    split = SwiGLU(16, 32, bias=True, layout='split')
    fused = SwiGLU(16, 32, bias=True, layout='fused')
    with torch.no_grad():
        fused.w12.weight.copy_(
            torch.cat([split.c_fc1.weight, split.c_fc2.weight]))
        fused.w12.bias.copy_(torch.cat([split.c_fc1.bias, split.c_fc2.bias]))
        fused.w3.weight.copy_(split.c_proj.weight)
        fused.w3.bias.copy_(split.c_proj.bias)
    x = torch.randn(2, 5, 16)
    ref = split.c_proj(F.silu(split.c_fc1(x)) * split.c_fc2(x))
    torch.testing.assert_close(split(x), ref)
    torch.testing.assert_close(fused(x), ref)


def test_silu_gate_gradients():
    torch.manual_seed(0)
    gate = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(silu_gate, (gate, up))
    # equal to autograd through the plain formula, values and gradients
    grad = torch.randn(3, 7, dtype=torch.float64)
    ours = torch.autograd.grad(silu_gate(gate, up), (gate, up), grad)
    ref = torch.autograd.grad(F.silu(gate) * up, (gate, up), grad)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(silu_gate(gate, up), F.silu(gate) * up)


def test_swiglu_gradients_both_layouts():
    torch.manual_seed(0)
    for layout in ('split', 'fused'):
        ffn = SwiGLU(6, 8, bias=True, layout=layout).double()
        x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(ffn, (x, ))


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(1000, 3)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    out = dp(x)
    kept = out[:, 0] != 0
    assert set(out[kept, 0].tolist()) == {2.0}
    assert 350 < kept.sum() < 650


def test_visionllama_block_names_and_drop_path_placement():
    blk = VisionLLaMABlock(32, 4, 64, drop_path=0.3)
    names = set(blk.state_dict())
    assert {
        'ln1.weight', 'attn.qkv.weight', 'attn.proj.bias', 'ln2.bias',
        'ffn.w12.weight', 'ffn.w12.bias', 'ffn.w3.weight'
    } <= names
    assert blk.drop_path.drop_prob == 0.3
    assert blk.ffn_drop_path.drop_prob == 0.  # official: attention only
    assert VisionLLaMABlock(
        32, 4, 64, drop_path=0.3, ffn_drop_path=True).ffn_drop_path.drop_prob \
        == 0.3
    rope = RotaryEmbedding2D(8)
    x = torch.randn(2, 12, 32)
    out = blk.eval()(x, rope=rope.grid(3, 4))
    ref_h = x + blk.attn(blk.ln1(x), rope=rope.grid(3, 4))
    torch.testing.assert_close(out, ref_h + blk.ffn(blk.ln2(ref_h)))


def test_layer_scale_block():
    blk = LayerScaleBlock(32, 4, 96, drop_path=0.1).eval()
    assert {
        'norm1.weight', 'gamma_1', 'gamma_2', 'mlp.c_fc1.weight',
        'mlp.c_fc2.weight', 'mlp.c_proj.weight'
    } <= set(blk.state_dict())
    assert 'mlp.c_fc1.bias' not in blk.state_dict()
    assert torch.all(blk.gamma_1 == 1e-4)
    x = torch.randn(2, 6, 32)
    h = x + blk.gamma_1 * blk.attn(blk.norm1(x))
    ref = h + blk.gamma_2 * blk.mlp(blk.norm2(h))
    torch.testing.assert_close(blk(x), ref)
    no_ls = LayerScaleBlock(32, 4, 96, layer_scale=None)
    assert no_ls.gamma_1 is None
    # every trainable parameter receives a gradient
    blk.train()
    blk(x, rope=RotaryEmbedding2D(8).grid(2, 3)).sum().backward()
    for n, p in blk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n

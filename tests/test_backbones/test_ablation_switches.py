"""The paper's ablation switches (Table 11) on the backbones and the DiT net:
RMSNorm vs LayerNorm, GELU MLP vs SwiGLU, class token vs GAP, learned PE /
PEG / no RoPE on the pyramid, the RoPE variants through ``rope_cfg``, and the
DiT baseline. Numerics against references written from the definitions."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionllama_mm.backbones import (PyramidVisionLLaMA, VisionLLaMA,
                                      VisionLLaMADeiT)
from visionllama_mm.generation.models import DiTLLaMA
from visionllama_mm.layers import Mlp, build_norm

TINY = dict(embed_dims=32, num_layers=2, num_heads=2)
PYR = dict(
    embed_dims=[16, 32],
    depths=[2, 2],
    num_heads=[2, 2],
    window_sizes=[2, 2],
    sr_ratios=[2, 1],
    patch_sizes=[4, 2])


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_rmsnorm_numerics():
    norm = build_norm('RMSNorm', 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 8)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), ref)
    with pytest.raises(ValueError, match='norm_type must be one of'):
        build_norm('BN', 8)


@pytest.mark.parametrize('act,approx', [('gelu', 'none'),
                                        ('gelu_tanh', 'tanh')])
def test_mlp_numerics(act, approx):
    mlp = Mlp(8, 32, act=act)
    x = torch.randn(2, 5, 8)
    ref = mlp.fc2(F.gelu(mlp.fc1(x), approximate=approx))
    torch.testing.assert_close(mlp(x), ref)


def test_plain_norm_and_ffn_switches():
    x = torch.randn(2, 1, 16, 16)
    base = VisionLLaMA(TINY, img_size=16, patch_size=4, in_channels=1)
    rms = VisionLLaMA(
        TINY,
        img_size=16,
        patch_size=4,
        in_channels=1,
        norm_cfg=dict(type='RMSNorm', eps=1e-6))
    assert isinstance(rms.layers[0].ln1, nn.RMSNorm)
    assert isinstance(rms.ln2, nn.RMSNorm) and isinstance(rms.ln1, nn.RMSNorm)
    # RMSNorm has no bias: one C-vector fewer per norm (2 per block + 2)
    assert count(base) - count(rms) == 32 * (2 * 2 + 2)
    mlp = VisionLLaMA(
        TINY, img_size=16, patch_size=4, in_channels=1, ffn_type='mlp')
    ffn = mlp.layers[0].ffn
    assert isinstance(ffn, Mlp) and ffn.fc1.out_features == 4 * 32
    for m in (rms, mlp):
        assert m(x)[0].shape == (2, 32)
    with pytest.raises(ValueError, match='ffn_type must be one of'):
        VisionLLaMA(TINY, ffn_type='moe')
    with pytest.raises(ValueError, match='norm_cfg type'):
        VisionLLaMA(TINY, norm_cfg=dict(type='BN'))


def test_plain_cls_token_vs_gap():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    cls = VisionLLaMA(
        TINY,
        img_size=16,
        patch_size=4,
        in_channels=1,
        with_cls_token=True,
        out_type='raw')
    raw = cls(x)[0]
    cls_out = copy.deepcopy(cls)
    cls_out.out_type = 'cls_token'
    torch.testing.assert_close(cls_out(x)[0], raw[:, 0])
    gap = copy.deepcopy(cls)
    gap.out_type = 'avg_featmap'
    gap.ln2 = nn.LayerNorm(32, eps=1e-6)
    torch.testing.assert_close(gap(x)[0], gap.ln2(raw[:, 1:].mean(1)))


def test_deit_switches():
    m = VisionLLaMADeiT(
        TINY,
        img_size=16,
        patch_size=4,
        in_channels=1,
        norm_type='RMSNorm',
        ffn_type='mlp',
        out_type='avg_featmap',
        rope_cfg=dict(mode='1d'))
    assert isinstance(m.norm, nn.RMSNorm)
    assert isinstance(m.blocks[0].mlp, Mlp)
    assert m.rope.mode == '1d'
    assert m(torch.randn(2, 1, 16, 16))[0].shape == (2, 32)


@pytest.mark.parametrize('rope_cfg', [
    dict(mode='1d'),
    dict(mode='mixed'),
    dict(ratio=0.5),
    dict(per_head=True),
    dict(ntk_alpha=2.)
])
def test_rope_cfg_reaches_every_backbone(rope_cfg):
    x = torch.randn(2, 1, 16, 16)
    plain = VisionLLaMA(
        TINY,
        img_size=16,
        patch_size=4,
        in_channels=1,
        with_cls_token=True,
        rope_cfg=rope_cfg)
    plain(x)[0].sum().backward()
    pyr = PyramidVisionLLaMA(PYR, in_channels=1, rope_cfg=rope_cfg)
    pyr(torch.randn(2, 1, 32, 32))[0].sum().backward()
    for rope in [plain.rope, *pyr.ropes]:
        for k, v in rope_cfg.items():
            assert getattr(rope, k) == v
    extra = rope_cfg.get('mode') == 'mixed'
    base = VisionLLaMA(
        TINY, img_size=16, patch_size=4, in_channels=1, with_cls_token=True)
    # only the learnable frequencies add parameters
    assert count(plain) - count(base) == (2 * 2 * 8 if extra else 0)
    if extra:
        assert plain.rope.freqs.grad is not None


def test_pyramid_learned_pos_embed():
    torch.manual_seed(0)
    m = PyramidVisionLLaMA(
        PYR, in_channels=1, pos_embed_type='learned', img_size=32)
    assert [tuple(p.shape) for p in m.pos_embeds] == [(1, 64, 16), (1, 16, 32)]
    # at img_size the table is used as is
    torch.testing.assert_close(m.resized_pos_embed(0, (8, 8)), m.pos_embeds[0])
    # other grids: bicubic resize of the (H, W) table
    grid = m.pos_embeds[0].reshape(1, 8, 8, 16).permute(0, 3, 1, 2)
    ref = F.interpolate(
        grid, size=(12, 16), mode='bicubic',
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(m.resized_pos_embed(0, (12, 16)), ref)
    assert m(torch.randn(1, 1, 48, 64))[0].shape == (1, 32)
    assert 'pos_embeds.0' in m.state_dict()


def test_pyramid_peg_and_no_rope():
    torch.manual_seed(0)
    peg = PyramidVisionLLaMA(PYR, in_channels=1, pos_embed_type='peg')
    conv = peg.pos_block[0].proj[0]
    assert conv.groups == 16 and conv.kernel_size == (3, 3)
    tokens = torch.randn(2, 64, 16)
    feat = tokens.transpose(1, 2).reshape(2, 16, 8, 8)
    ref = (feat + conv(feat)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(peg.pos_block[0](tokens, (8, 8)), ref)
    assert peg(torch.randn(2, 1, 32, 32))[0].shape == (2, 32)

    x = torch.randn(2, 1, 32, 32)
    norope = PyramidVisionLLaMA(
        PYR, in_channels=1, use_rope=False, layer_scale=None)
    rope = PyramidVisionLLaMA(PYR, in_channels=1, layer_scale=None)
    rope.load_state_dict(norope.state_dict())
    for r in rope.ropes:  # identity tables: rotation by 0

        def tables(coords, _d=r.head_dim):
            n = coords.shape[0]
            return torch.ones(n, _d), torch.zeros(n, _d)

        r.tables = tables
        r.cache_size = 0
    torch.testing.assert_close(norope(x)[0], rope(x)[0])
    real = PyramidVisionLLaMA(PYR, in_channels=1, layer_scale=None)
    real.load_state_dict(norope.state_dict())
    assert not torch.allclose(norope(x)[0], real(x)[0])
    with pytest.raises(ValueError, match='pos_embed_type must be one of'):
        PyramidVisionLLaMA(PYR, pos_embed_type='sincos')


def test_pyramid_defaults_unchanged():
    m = PyramidVisionLLaMA(PYR, in_channels=1)
    names = dict(m.named_parameters())
    assert not any(n.startswith(('pos_embeds', 'pos_block')) for n in names)
    assert m.use_rope and m.pos_embed_type is None


def test_dit_baseline_configuration():
    kw = dict(
        input_size=8,
        patch_size=2,
        in_channels=1,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=10,
        cfg_channels=None,
        learn_sigma=False)
    dit = DiTLLaMA(ffn_type='mlp', use_rope=False, add_pos_embed=True, **kw)
    llama = DiTLLaMA(**kw)
    mlp = dit.blocks[0].mlp
    assert isinstance(mlp, Mlp) and mlp.approximate == 'tanh'
    assert mlp.fc1.weight.shape == (128, 32) and mlp.fc1.bias is not None
    # DiT block FFN: 2 * (4 D^2) + 5 D parameters per block
    per_block_mlp = sum(p.numel() for p in mlp.parameters())
    assert per_block_mlp == 8 * 32 * 32 + 4 * 32 + 32
    torch.manual_seed(0)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([1., 500.]), \
        torch.tensor([1, 3])
    for m in (dit, llama):
        # adaLN-Zero: make the blocks non-trivial
        for p in m.parameters():
            nn.init.normal_(p, std=0.05)
        assert m(x, t, y).shape == (2, 1, 8, 8)
    # no RoPE in the DiT net: a block's attention sees rope=None; with the
    # sin-cos embedding removed it is permutation-equivariant over tokens
    dit.add_pos_embed = False
    tokens = torch.randn(2, 16, 32)
    c = torch.randn(2, 32)
    perm = torch.randperm(16)
    blk = dit.blocks[0]
    torch.testing.assert_close(
        blk(tokens, c, None, None)[:, perm], blk(tokens[:, perm], c, None,
                                                 None))

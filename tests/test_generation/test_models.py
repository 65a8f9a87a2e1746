"""DiT-LLaMA / SiT-LLaMA networks: zoo, counts, init, forward parity, CFG."""
import copy
import math

import pytest
import torch
from gen_reference import llama_hidden, official_state_dict, reference_forward

from visionllama_mm.generation.models import (DiTLLaMA, DiTLLaMA_models,
                                              SiTLLaMA, SiTLLaMA_models,
                                              build_generator,
                                              get_2d_sincos_pos_embed)

# docs/generation.md#variants: (depth, D, heads, patch, hidden, params incl.
# pos_embed in M)
ZOO = {
    'DiTLLaMA_B_4': (12, 768, 12, 4, 2048, 130.4),
    'DiTLLaMA_L_4': (24, 1024, 16, 4, 2816, 464.2),
    'DiTLLaMA_XL_4': (28, 1152, 16, 4, 3072, 674.9),
    'DiTLLaMA_XL_2': (28, 1152, 16, 2, 3072, 675.0),
    'SiTLLaMA_S_2': (12, 384, 6, 2, 1024, 32.9),
    'SiTLLaMA_B_2': (12, 768, 12, 2, 2048, 130.5),
    'SiTLLaMA_L_2': (24, 1024, 16, 2, 2816, 464.3),
    'SiTLLaMA_XL_2': (28, 1152, 16, 2, 3072, 675.0),
}


def official_param_count(depth,
                         D,
                         patch,
                         hidden,
                         in_ch=4,
                         classes=1000,
                         input_size=32):
    """Count of the official module, from the docs/generation.md#model
    definition."""
    out = 2 * in_ch
    T = (input_size // patch)**2
    n = D * in_ch * patch * patch + D  # x_embedder
    n += 256 * D + D + D * D + D  # t_embedder
    n += (classes + 1) * D  # y_embedder (null class)
    n += T * D  # the unused pos_embed
    block = (3 * D * D + 3 * D) + (D * D + D) + 3 * D * hidden + (6 * D * D +
                                                                  6 * D)
    n += depth * block
    n += (2 * D * D + 2 * D) + (D * patch * patch * out + patch * patch * out)
    return n


def tiny(cls=DiTLLaMA, **kw):
    cfg = dict(
        input_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=10)
    cfg.update(kw)
    return cls(**cfg)


def randomize(model, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_on_meta_counts_equal_official(name):
    depth, D, heads, patch, hidden, table_m = ZOO[name]
    with torch.device('meta'):
        model = build_generator(name)
    assert len(model.blocks) == depth
    assert model.hidden_size == D and model.num_heads == heads
    assert model.patch_size == patch
    assert model.blocks[0].mlp.hidden_features == hidden == llama_hidden(D)
    assert isinstance(model, SiTLLaMA if name.startswith('SiT') else DiTLLaMA)
    ours = sum(p.numel() for p in model.parameters())
    # not created by us (docs/visionllama.md#official-quirks item 10)
    pos_embed = (32 // patch)**2 * D
    expected = official_param_count(depth, D, patch, hidden)
    assert ours + pos_embed == expected
    assert round((ours + pos_embed) / 1e6, 1) == table_m
    assert 'pos_embed' not in model.state_dict()


def test_name_tables_and_aliases():
    assert set(DiTLLaMA_models) >= {
        'DiTLLaMA_B_4', 'DiTLLaMA_L_4', 'DiTLLaMA_XL_4', 'DiTLLaMA_XL_2'
    }
    assert set(SiTLLaMA_models) >= {
        'SiTLLaMA_S_2', 'SiTLLaMA_B_2', 'SiTLLaMA_L_2', 'SiTLLaMA_XL_2'
    }
    assert DiTLLaMA_models['DiT-LLaMA-XL/2'] is DiTLLaMA_models[
        'DiTLLaMA_XL_2']
    with pytest.raises(ValueError, match='model name must be one of'):
        build_generator('DiTLLaMA_S_2')


def test_invalid_options():
    with pytest.raises(ValueError, match='cfg_channels'):
        tiny(cfg_channels=5)
    with pytest.raises(ValueError, match='cfg_channels'):
        tiny(cfg_channels=0)
    with pytest.raises(ValueError, match='head_dim'):
        tiny(hidden_size=36, num_heads=2)  # head_dim 18 is not 4k
    with pytest.raises(ValueError, match='divisible by patch_size'):
        tiny()(torch.zeros(1, 4, 7, 8), torch.zeros(1), torch.zeros(1).long())


def test_init_is_official():
    model = tiny()
    # adaLN-Zero and zero output layer
    for blk in model.blocks:
        assert blk.adaLN_modulation[-1].weight.abs().sum() == 0
        assert blk.adaLN_modulation[-1].bias.abs().sum() == 0
        assert blk.attn.qkv.bias.abs().sum() == 0
        assert blk.mlp.c_fc1.bias is None and blk.mlp.c_proj.bias is None
    fl = model.final_layer
    for p in (fl.linear.weight, fl.linear.bias, fl.adaLN_modulation[-1].weight,
              fl.adaLN_modulation[-1].bias):
        assert p.abs().sum() == 0
    assert model.x_embedder.proj.bias.abs().sum() == 0
    # x_embedder: xavier on the (D, C p p) view -> bound sqrt(6 / (fan sum))
    w = model.x_embedder.proj.weight
    bound = math.sqrt(6 / (w.shape[0] + w[0].numel()))
    assert w.abs().max() <= bound and w.abs().max() > bound / 2
    assert abs(model.y_embedder.embedding_table.weight.std() - 0.02) < 0.01
    # LN without affine, eps 1e-6
    assert model.blocks[0].norm1.weight is None
    assert model.blocks[0].norm1.eps == 1e-6
    # initial prediction is exactly zero
    out = model(
        torch.randn(2, 4, 8, 8), torch.tensor([1., 500.]), torch.tensor([0,
                                                                         3]))
    assert out.shape == (2, 8, 8, 8) and out.abs().max() == 0


def test_keys_match_official_layout():
    sd = official_state_dict(depth=2, dim=32, patch=2, grid=4)
    model = tiny()
    ours = model.state_dict()
    assert set(ours) == set(sd) - {'pos_embed'}
    for k, v in ours.items():
        assert v.shape == sd[k].shape, k


@pytest.mark.parametrize('cls,sit', [(DiTLLaMA, False), (SiTLLaMA, True)])
@pytest.mark.parametrize('hw', [(8, 8), (4, 8)])
def test_forward_matches_spec_reference(cls, sit, hw):
    sd = official_state_dict(depth=2, dim=32, patch=2, grid=4)
    model = tiny(cls).eval()
    missing, unexpected = model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected  # pos_embed dropped by the hook
    x = torch.randn(3, 4, *hw)
    t = torch.tensor([0., 17., 999.])
    y = torch.tensor([1, 9, 10])  # 10 = the null class
    out = model(x, t, y)
    ref = reference_forward(sd, x, t, y, num_heads=2, sit=sit)
    assert out.shape == ref.shape == (3, 4 if sit else 8, *hw)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # the manual attention path is the same math
    for blk in model.blocks:
        blk.attn.fused_attn = False
    torch.testing.assert_close(
        model(x, t, y).double(), ref, atol=1e-5, rtol=1e-5)


def test_label_dropout_only_in_training():
    model = randomize(tiny(class_dropout_prob=1.0))
    x, t, y = torch.randn(2, 4, 8, 8), torch.ones(2), torch.tensor([1, 2])
    model.train()
    torch.manual_seed(0)
    dropped = model(x, t, y)
    null = model(x, t, torch.full_like(y, 10))
    torch.testing.assert_close(dropped, null)
    model.eval()
    assert not torch.allclose(model(x, t, y), null)
    no_cfg = tiny(class_dropout_prob=0.)
    assert no_cfg.y_embedder.embedding_table.num_embeddings == 10


@pytest.mark.parametrize('cls', [DiTLLaMA, SiTLLaMA])
@pytest.mark.parametrize('cfg_channels', [3, 4])
def test_forward_with_cfg_semantics(cls, cfg_channels):
    model = randomize(tiny(cls, cfg_channels=cfg_channels)).eval()
    x = torch.randn(2, 4, 8, 8)
    xx = torch.cat([x, torch.randn_like(x)])  # second half is ignored
    t = torch.tensor([5., 5., 5., 5.])
    y = torch.tensor([3, 4, 10, 10])
    scale = 4.
    out = model.forward_with_cfg(xx, t, y, scale)
    cond = model(x, t[:2], y[:2])
    uncond = model(x, t[2:], y[2:])
    k = cfg_channels
    guided = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
    torch.testing.assert_close(out[:2, :k], guided)
    torch.testing.assert_close(out[2:, :k], guided)
    # the other channels pass through from each half
    torch.testing.assert_close(out[:2, k:], cond[:, k:])
    torch.testing.assert_close(out[2:, k:], uncond[:, k:])
    # scale 1 is the conditional prediction on the guided channels
    out1 = model.forward_with_cfg(xx, t, y, 1.)
    torch.testing.assert_close(out1[:2, :k], cond[:, :k])


def test_pos_embed_export_and_reload():
    model = randomize(tiny())
    state = model.official_state_dict()
    assert state['pos_embed'].shape == (1, 16, 32)
    # DiT / MAE formula written out: first half column, second half row
    D, G = 32, 4
    omega = 1. / 10000**(torch.arange(D // 4, dtype=torch.float64) / (D / 4))
    ref = []
    for n in range(G * G):
        x, y = n % G, n // G
        ref.append(
            torch.cat([
                torch.sin(x * omega),
                torch.cos(x * omega),
                torch.sin(y * omega),
                torch.cos(y * omega)
            ]))
    torch.testing.assert_close(
        state['pos_embed'][0].double(), torch.stack(ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        get_2d_sincos_pos_embed(D, G), torch.stack(ref), atol=1e-12, rtol=0)
    other = tiny()
    other.load_state_dict(state)  # pos_embed dropped on load
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)


def test_grad_checkpointing_and_backward():
    model = randomize(tiny(cls=DiTLLaMA)).train()
    model.y_embedder.dropout_prob = 0.
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3.,
                                                     7.]), torch.tensor([1, 2])
    out = model(x, t, y)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads.items():
        assert torch.isfinite(g).all(), n
        if not n.startswith('y_embedder'):  # only used rows get gradients
            assert g.abs().sum() > 0, n
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    ckpt.zero_grad()
    out2 = ckpt(x, t, y)
    torch.testing.assert_close(out2, out)
    out2.square().mean().backward()
    for n, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


def test_rope_has_no_state_and_follows_grid():
    model = tiny()
    assert not any('rope' in k for k in model.state_dict())
    x = torch.randn(1, 4, 4, 8)
    model(x, torch.zeros(1), torch.zeros(1).long())
    # a (2, 4) token grid was cached, not a square one
    assert any(k[1:3] == (2, 4) for k in model.rope._cache)


def test_add_pos_embed_option():
    """Opt-in sin-cos embedding: added to the tokens, not in checkpoints."""
    base = randomize(tiny()).eval()
    model = tiny(add_pos_embed=True).eval()
    model.load_state_dict(base.state_dict())  # same keys, strict
    assert set(model.state_dict()) == set(base.state_dict())
    x, t = torch.randn(2, 4, 4, 8), torch.tensor([3., 7.])
    y = torch.tensor([1, 2])
    # a (2, 4) grid in raster order: token n sits at (n % 4, n // 4)
    pos = get_2d_sincos_pos_embed(32, (2, 4))
    torch.testing.assert_close(pos, get_2d_sincos_pos_embed(32, 4)[:8])
    with torch.no_grad():
        out = model(x, t, y)
        plain = base(x, t, y)
        tokens = base.x_embedder(x) + pos.float()
        base.x_embedder.forward = lambda img: tokens
        shifted = base(x, t, y)
    torch.testing.assert_close(out, shifted)
    assert not torch.allclose(out, plain)

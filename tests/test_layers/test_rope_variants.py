"""RoPE variants of the paper's ablations against references from their
definitions (complex products, allowed in tests only)."""
import math

import pytest
import torch

from visionllama_mm.layers.rope import (RotaryEmbedding2D, apply_rope,
                                        gather_tables, mixed_frequencies,
                                        ntk_base)

D = 16


def complex_rotate(q, angles):
    """Rotate adjacent pairs of q (..., N, d) by angles (..., N, d / 2)."""
    z = torch.view_as_complex(q.double().reshape(*q.shape[:-1], -1,
                                                 2).contiguous())
    rot = torch.polar(torch.ones_like(angles.double()), angles.double())
    return torch.view_as_real(z * rot).flatten(-2)


def grid_xy(h, w):
    n = torch.arange(h * w)
    return (n % w).double(), (n // w).double()


def axial_angles(x, y, theta):
    """[x t0, y t0, x t1, y t1, ...] (VisionLLaMA layout)."""
    return torch.stack([x[:, None] * theta, y[:, None] * theta],
                       -1).flatten(-2)


@pytest.fixture
def q():
    torch.manual_seed(0)
    return torch.randn(2, 4, 12, D, dtype=torch.float64)


def rotate(module, q, h=3, w=4):
    cos, sin = module.grid(h, w)
    return apply_rope(q, cos.double(), sin.double())


def test_default_is_official_2d(q):
    x, y = grid_xy(3, 4)
    theta = 10000.**(-4 * torch.arange(D // 4).double() / D)
    out = rotate(RotaryEmbedding2D(D), q)
    torch.testing.assert_close(
        out, complex_rotate(q, axial_angles(x, y, theta)), atol=1e-6, rtol=0)
    assert not list(RotaryEmbedding2D(D).parameters())


def test_1d_raster(q):
    n = torch.arange(12).double()  # y * W + x
    theta = 10000.**(-2 * torch.arange(D // 2).double() / D)
    out = rotate(RotaryEmbedding2D(D, mode='1d'), q)
    torch.testing.assert_close(
        out, complex_rotate(q, n[:, None] * theta), atol=1e-6, rtol=0)


def test_1d_class_token_and_anchor():
    m = RotaryEmbedding2D(D, mode='1d', anchor=2)
    cos, sin = m.grid(4, 4, cls_pos='official')
    # scale 2 / 4: token n sits at n / 2, the class token (W - 1, -1) at
    # raster index -1 scaled likewise
    n = torch.cat([torch.tensor([-1.]), torch.arange(16.)]) * 0.5
    theta = 10000.**(-2 * torch.arange(D // 2).double() / D)
    ang = (n.double()[:, None] * theta).repeat_interleave(2, -1)
    torch.testing.assert_close(cos.double(), ang.cos(), atol=1e-6, rtol=0)


@pytest.mark.parametrize('ratio', [0.5, 0.75])
def test_partial_ratio(q, ratio):
    x, y = grid_xy(3, 4)
    r = int(D * ratio)
    theta = 10000.**(-4 * torch.arange(r // 4).double() / r)
    ang = torch.cat(
        [axial_angles(x, y, theta),
         torch.zeros(12, (D - r) // 2).double()], -1)
    out = rotate(RotaryEmbedding2D(D, ratio=ratio), q)
    torch.testing.assert_close(out, complex_rotate(q, ang), atol=1e-6, rtol=0)
    # the tail channels are untouched
    torch.testing.assert_close(out[..., r:], q[..., r:])


def test_partial_ratio_validation():
    with pytest.raises(ValueError, match='ratio'):
        RotaryEmbedding2D(D, ratio=0.3)
    with pytest.raises(ValueError, match='ratio'):
        RotaryEmbedding2D(D, ratio=0.)


@pytest.mark.parametrize('base', [100., 10000.])
@pytest.mark.parametrize('alpha', [1., 2., 3.5])
def test_ntk_alpha(q, base, alpha):
    x, y = grid_xy(3, 4)
    k = D // 2  # channels per axis
    eff = base * alpha**(k / (k - 2))
    theta = eff**(-4 * torch.arange(D // 4).double() / D)
    out = rotate(RotaryEmbedding2D(D, base=base, ntk_alpha=alpha), q)
    torch.testing.assert_close(
        out, complex_rotate(q, axial_angles(x, y, theta)), atol=1e-6, rtol=0)
    assert ntk_base(base, alpha, k) == pytest.approx(eff)
    # the highest frequency stays, the lowest is divided by about alpha
    if alpha > 1:
        lo = eff**(-4 * (D // 4 - 1) / D) / base**(-4 * (D // 4 - 1) / D)
        assert 1 / alpha**1.4 < lo < 1 / alpha**0.9


def test_per_head(q):
    x, y = grid_xy(3, 4)
    heads = 4
    ang = []
    for h in range(heads):
        theta = 10000.**(-4 * (torch.arange(D // 4).double() + h / heads) / D)
        ang.append(axial_angles(x, y, theta))
    m = RotaryEmbedding2D(D, per_head=True, num_heads=heads)
    cos, _ = m.grid(3, 4)
    assert cos.shape == (1, heads, 12, D)
    out = rotate(m, q)
    torch.testing.assert_close(
        out, complex_rotate(q,
                            torch.stack(ang)[None]), atol=1e-6, rtol=0)
    # head 0 equals the shared set
    torch.testing.assert_close(out[:, 0],
                               rotate(RotaryEmbedding2D(D), q)[:, 0])


def test_per_head_gather():
    m = RotaryEmbedding2D(D, per_head=True, num_heads=4)
    cos, sin = m.grid(3, 4)
    ids = torch.tensor([[0, 5, 7], [1, 2, 11]])
    gc, gs = gather_tables(cos, sin, ids)
    assert gc.shape == (2, 4, 3, D)
    for b in range(2):
        torch.testing.assert_close(gc[b], cos[0][:, ids[b]])
        torch.testing.assert_close(gs[b], sin[0][:, ids[b]])


def test_mixed_learnable(q):
    torch.manual_seed(1)
    heads = 4
    m = RotaryEmbedding2D(D, mode='mixed', num_heads=heads, base=10.)
    assert m.freqs.shape == (2, heads, D // 2)
    f = m.freqs.detach().double()
    x, y = grid_xy(3, 4)
    ang = x[None, :, None] * f[0][:, None] + y[None, :, None] * f[1][:, None]
    torch.testing.assert_close(
        rotate(m, q), complex_rotate(q, ang[None]), atol=1e-6, rtol=0)
    # RoPE-Mixed init: magnitudes base^(-4m/d) along a and a + pi / 2
    mag = 10.**(-4 * torch.arange(D // 4).double() / D)
    torch.testing.assert_close(f[0, :, :D // 4]**2 + f[1, :, :D // 4]**2,
                               (mag**2).expand(heads, -1))
    dot = f[0, :, :D // 4] * f[0, :, D // 4:] + f[1, :, :D // 4] * f[1, :,
                                                                     D // 4:]
    torch.testing.assert_close(dot, torch.zeros_like(dot), atol=1e-6, rtol=0)
    # learnable: gradients reach the frequencies, nothing is cached
    cos, sin = m.grid(3, 4)
    apply_rope(q.float(), cos, sin).square().sum().backward()
    assert m.freqs.grad is not None and m.freqs.grad.abs().sum() > 0
    assert m.cache_nbytes() == 0
    assert set(dict(m.named_parameters())) == {'freqs'}


def test_mixed_shared_heads_and_validation():
    m = RotaryEmbedding2D(D, mode='mixed', num_heads=4, per_head=False)
    assert m.freqs.shape == (2, 1, D // 2)
    assert m.grid(3, 4)[0].shape == (12, D)
    with pytest.raises(ValueError, match='ntk_alpha'):
        RotaryEmbedding2D(D, mode='mixed', ntk_alpha=2.)
    with pytest.raises(ValueError, match='mode must be one of'):
        RotaryEmbedding2D(D, mode='3d')
    assert mixed_frequencies(D, 3).shape == (2, 3, D // 2)


@pytest.mark.parametrize('cfg', [
    dict(mode='1d'),
    dict(mode='mixed', num_heads=2),
    dict(per_head=True, num_heads=2),
    dict(ratio=0.5),
])
def test_variants_preserve_pair_norms(cfg):
    torch.manual_seed(0)
    qq = torch.randn(1, 2, 12, D)
    m = RotaryEmbedding2D(D, **cfg)
    out = apply_rope(qq, *m.grid(3, 4))
    torch.testing.assert_close(
        out.unflatten(-1, (-1, 2)).norm(dim=-1),
        qq.unflatten(-1, (-1, 2)).norm(dim=-1))


@pytest.mark.parametrize('cfg', [dict(mode='1d'), dict(mode='mixed')])
def test_variants_compile_without_graph_breaks(cfg):
    import torch._dynamo as dynamo
    m = RotaryEmbedding2D(D, num_heads=2, **cfg)
    qq = torch.randn(1, 2, 12, D)

    def f(x):
        return apply_rope(x, *m.grid(3, 4))

    explain = dynamo.explain(f)(qq)
    assert explain.graph_break_count == 0
    assert math.isfinite(float(f(qq).sum()))

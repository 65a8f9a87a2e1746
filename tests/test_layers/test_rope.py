"""RoPE property tests
(docs/visionllama.md#reference-formula-and-tested-properties)."""
import pytest
import torch

from visionllama_mm.layers.attention import RoPEAttention, scaled_dot_product
from visionllama_mm.layers.rope import (RotaryEmbedding2D, anchor_scale,
                                        apply_rope, gather_tables, grid_coords,
                                        gsa_key_coords, rope_frequencies)


def complex_reference(q, coords, head_dim, base=10000.):
    """docs/visionllama.md#reference-formula-and-tested-properties: z_j * exp(i
    phi_j), phi_j = (x|y) theta_{j//2}."""
    q = q.double()
    z = torch.complex(q[..., 0::2], q[..., 1::2])
    j = torch.arange(head_dim // 2)
    theta = base**(-4. * (j // 2).double() / head_dim)
    axis = torch.where(j % 2 == 0, 0, 1)
    phi = coords.double()[..., axis] * theta
    out = z * torch.exp(1j * phi)
    return torch.stack([out.real, out.imag], -1).flatten(-2)


def rotate(q, coords, head_dim=None):
    head_dim = head_dim or q.shape[-1]
    rope = RotaryEmbedding2D(head_dim)
    cos, sin = rope.tables(coords)
    return apply_rope(q, cos, sin)


def test_norm_preserved_per_pair():
    torch.manual_seed(0)
    q = torch.randn(2, 3, 40, 16)
    coords = torch.rand(40, 2) * 50 - 10  # fractional, negative too
    out = rotate(q, coords)
    pair_in = q.unflatten(-1, (-1, 2)).norm(dim=-1)
    pair_out = out.unflatten(-1, (-1, 2)).norm(dim=-1)
    torch.testing.assert_close(pair_out, pair_in, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(out.norm(dim=-1), q.norm(dim=-1))


@pytest.mark.parametrize('delta', [(3., -2.), (0.37, 5.5)])
def test_relative_offset_invariance(delta):
    torch.manual_seed(1)
    d = 32
    q, k = torch.randn(2, 1, 1, 1, d).unbind(0)
    p, r = torch.tensor([[4., 7.]]), torch.tensor([[1.5, -2.]])
    shift = torch.tensor([delta])

    def score(pq, pk):
        return (rotate(q, pq) * rotate(k, pk)).sum()

    s0 = score(p, r)
    torch.testing.assert_close(
        score(p + shift, r + shift), s0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        score(p - r, torch.zeros(1, 2)), s0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('hw', [(4, 4), (3, 5), (7, 2)])
def test_parity_with_complex_formula_grid(hw):
    torch.manual_seed(2)
    H, W = hw
    d = 24
    q = torch.randn(2, 3, H * W, d)
    rope = RotaryEmbedding2D(d)
    out = apply_rope(q, *rope.grid(H, W))
    ref = complex_reference(q, grid_coords(H, W), d)
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=0)


def test_parity_gsa_and_gather():
    torch.manual_seed(3)
    d = 32
    rope = RotaryEmbedding2D(d)
    for mode in ('official', 'centroid'):
        k = torch.randn(1, 2, 12, d)
        out = apply_rope(k, *rope.gsa_keys(12, 16, 4, mode))
        ref = complex_reference(k, gsa_key_coords(12, 16, 4, mode), d)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    # per-sample gather (MAE)
    H, W, B, K = 4, 6, 3, 5
    ids_keep = torch.stack([torch.randperm(H * W)[:K] for _ in range(B)])
    cos, sin = gather_tables(*rope.grid(H, W), ids_keep)
    x = torch.randn(B, 2, K, d)
    out = apply_rope(x, cos, sin)
    coords = grid_coords(H, W)[ids_keep]  # (B, K, 2)
    ref = complex_reference(x, coords[:, None], d)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    for b in range(B):
        full = rope.grid(H, W)[0][ids_keep[b]]
        torch.testing.assert_close(cos[b], full)


def test_golden_layout():
    # d = 8, theta = (1, 0.01): base such that base ** (-4/8) = 0.01
    rope = RotaryEmbedding2D(8, base=1e4)
    torch.testing.assert_close(
        rope_frequencies(8, 1e4), torch.tensor([1., 0.01]))
    cos, sin = rope.tables(torch.tensor([[3., 5.]]))
    # both channels of a pair share the angle; the sin table carries the
    # rotation's sign, (-sin phi, sin phi)
    torch.testing.assert_close(cos[:, 0::2], cos[:, 1::2])
    torch.testing.assert_close(sin[:, 0::2], -sin[:, 1::2])
    angles = torch.atan2(sin[:, 1::2], cos[:, 0::2])[0]
    torch.testing.assert_close(
        angles,
        torch.tensor([3., 5., .03, .05]) -
        torch.tensor([0., 2 * torch.pi, 0., 0.]))
    cos2, _ = rope.tables(torch.tensor([[4., 5.]]))
    changed = (cos2 != cos)[0].unflatten(-1, (-1, 2))[:, 0]
    assert changed.tolist() == [True, False, True, False]


def test_identity_at_origin():
    q = torch.randn(1, 1, 1, 16)
    assert torch.equal(rotate(q, torch.zeros(1, 2)), q)


def test_grid_coords_and_anchor():
    c = grid_coords(3, 5)
    n = torch.arange(15)
    assert torch.equal(c[:, 0], (n % 5).float())
    assert torch.equal(c[:, 1], (n // 5).float())
    assert anchor_scale(3, 5, 14, 'height') == (14 / 3, 14 / 3)
    assert anchor_scale(3, 5, 14, 'per_axis') == (14 / 5, 14 / 3)
    rope = RotaryEmbedding2D(8, anchor=14, anchor_mode='per_axis')
    cos, _ = rope.grid(3, 5)
    ref, _ = rope.tables(c * torch.tensor([14 / 5, 14 / 3]))
    torch.testing.assert_close(cos, ref)
    with pytest.raises(ValueError, match='anchor_mode'):
        RotaryEmbedding2D(8, anchor_mode='width')


# docs/pyramid.md#gsa-key-positions worked table: official (x, y) and centroid
# (x, y) at 224 input
GSA_TABLE = {
    (56, 8): {
        0: ((0.875, 0.875), (3.5, 3.5)),
        1: ((8.875, 0.875), (11.5, 3.5)),
        6: ((48.875, 0.875), (51.5, 3.5)),
        7: ((56.875, 0.875), (3.5, 11.5)),
        14: ((112.875, 0.875), (3.5, 19.5)),
        27: ((216.875, 0.875), (51.5, 27.5)),
        28: ((224.875, 0.875), (3.5, 35.5)),
        48: ((384.875, 0.875), (51.5, 51.5))
    },
    (28, 4): {
        0: ((0.75, 0.75), (1.5, 1.5)),
        1: ((4.75, 0.75), (5.5, 1.5)),
        6: ((24.75, 0.75), (25.5, 1.5)),
        7: ((28.75, 0.75), (1.5, 5.5)),
        14: ((56.75, 0.75), (1.5, 9.5)),
        27: ((108.75, 0.75), (25.5, 13.5)),
        28: ((0.75, 4.75), (1.5, 17.5)),
        48: ((80.75, 4.75), (25.5, 25.5))
    },
    (14, 2): {
        0: ((0.5, 0.5), (0.5, 0.5)),
        1: ((2.5, 0.5), (2.5, 0.5)),
        6: ((12.5, 0.5), (12.5, 0.5)),
        7: ((14.5, 0.5), (0.5, 2.5)),
        14: ((0.5, 2.5), (0.5, 4.5)),
        27: ((26.5, 2.5), (12.5, 6.5)),
        28: ((0.5, 4.5), (0.5, 8.5)),
        48: ((12.5, 6.5), (12.5, 12.5))
    },
}


@pytest.mark.parametrize('stage', list(GSA_TABLE))
def test_gsa_key_coords_worked_table(stage):
    H, s = stage
    off = gsa_key_coords(H, H, s, 'official')
    cen = gsa_key_coords(H, H, s, 'centroid')
    assert off.shape == cen.shape == (49, 2)
    for j, (o, c) in GSA_TABLE[stage].items():
        assert tuple(off[j].tolist()) == o
        assert tuple(cen[j].tolist()) == c
    # s = 1: both mappings are the plain grid
    torch.testing.assert_close(
        gsa_key_coords(7, 7, 1, 'official'), grid_coords(7, 7))
    torch.testing.assert_close(
        gsa_key_coords(7, 7, 1, 'centroid'), grid_coords(7, 7))


@pytest.mark.parametrize('H,s,rows,max_x,lo,hi', [
    (128, 8, 2, 1016.875, 3.5, 123.5),
    (64, 4, 4, 252.75, 1.5, 61.5),
    (32, 2, 8, 62.5, 0.5, 30.5),
    (16, 1, 16, 15., 0., 15.),
])
def test_gsa_key_coords_512(H, s, rows, max_x, lo, hi):
    off = gsa_key_coords(H, H, s, 'official')
    cen = gsa_key_coords(H, H, s, 'centroid')
    assert off.shape[0] == 256
    assert len(off[:, 1].unique()) == rows
    assert off[:, 0].max().item() == max_x
    assert cen.min().item() == lo and cen.max().item() == hi


def test_gsa_invalid_mode():
    with pytest.raises(ValueError, match="gsa_key_pos.*'official'"):
        gsa_key_coords(8, 8, 2, 'center')


def test_cache_swapped_hw_and_device_move():
    rope = RotaryEmbedding2D(16)
    a, _ = rope.grid(4, 6)
    b, _ = rope.grid(6, 4)
    assert a.shape == b.shape and not torch.equal(a, b)
    ka, _ = rope.gsa_keys(8, 16, 2)
    kb, _ = rope.gsa_keys(16, 8, 2)
    assert not torch.equal(ka, kb)
    assert len(rope._cache) == 4
    rope.to(torch.float64)  # dtype/device moves drop the cache
    assert len(rope._cache) == 0
    c, _ = rope.grid(4, 6)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c, a)


def test_autocast_and_half():
    rope = RotaryEmbedding2D(16).half()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cos, sin = rope.grid(5, 3)
    assert cos.dtype == torch.float32
    q = torch.randn(1, 2, 15, 16)
    out_bf = apply_rope(q.bfloat16(), cos, sin)
    assert out_bf.dtype == torch.bfloat16
    torch.testing.assert_close(
        out_bf.float(), apply_rope(q, cos, sin), atol=3e-2, rtol=2e-2)


def test_autograd_safety():
    rope = RotaryEmbedding2D(8)
    attn = RoPEAttention(16, 2).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    cos, sin = rope.grid(1, 6)
    with torch.autograd.set_detect_anomaly(True):
        attn(x, rope=(cos, sin), num_prefix_tokens=1).sum().backward()
    q = torch.randn(1, 1, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: apply_rope(t, cos.double(), sin.double()), (q, ))


def test_no_persistence():
    rope = RotaryEmbedding2D(8)
    rope.grid(3, 3)
    assert len(rope.state_dict()) == 0
    attn = RoPEAttention(16, 2)
    assert set(attn.state_dict()) == {
        'qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias'
    }


def test_prefix_tokens_untouched():
    rope = RotaryEmbedding2D(8)
    x = torch.randn(1, 2, 5, 8)
    out = apply_rope(x, *rope.grid(2, 2), num_prefix_tokens=1)
    assert torch.equal(out[:, :, :1], x[:, :, :1])
    with pytest.raises(ValueError, match='does not match'):
        apply_rope(x, *rope.grid(2, 2))


def test_cls_token_official_position():
    rope = RotaryEmbedding2D(8)
    cos, sin = rope.grid(3, 4, cls_pos='official')
    ref_cos, _ = rope.tables(torch.tensor([[3., -1.]]))
    torch.testing.assert_close(cos[:1], ref_cos)
    assert cos.shape[0] == 13


def test_attention_fused_equals_manual():
    torch.manual_seed(4)
    attn = RoPEAttention(32, 4).eval()
    rope = RotaryEmbedding2D(8)
    x = torch.randn(2, 12, 32)
    mask = torch.rand(2, 1, 12, 12) > 0.3
    mask[..., 0] = True
    outs = []
    for fused in (True, False):
        attn.fused_attn = fused
        outs.append(attn(x, rope=rope.grid(3, 4), attn_mask=mask))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    q, k, v = torch.randn(3, 2, 2, 5, 8).unbind(0)
    torch.testing.assert_close(
        scaled_dot_product(q, k, v, fused=True),
        scaled_dot_product(q, k, v, fused=False),
        atol=1e-5,
        rtol=1e-5)


def test_cache_is_a_bounded_lru():
    rope = RotaryEmbedding2D(8, cache_size=2)
    a = rope.grid(2, 3)
    rope.grid(3, 2)
    assert rope.grid(2, 3) is a  # a hit refreshes the entry
    rope.grid(4, 4)  # evicts (3, 2), the least recently used
    assert [k[1:3] for k in rope._cache] == [(2, 3), (4, 4)]
    assert rope.cache_nbytes() == 2 * 4 * 8 * (6 + 16)
    torch.testing.assert_close(rope.grid(3, 2), rope.tables(grid_coords(3, 2)))
    off = RotaryEmbedding2D(8, cache_size=0)
    off.grid(2, 3)
    assert len(off._cache) == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='cache_size'):
            RotaryEmbedding2D(8, cache_size=bad)


def test_inference_mode_tables_serve_training():
    rope = RotaryEmbedding2D(8)
    with torch.inference_mode():
        cos, sin = rope.grid(2, 3)
        apply_rope(torch.randn(1, 1, 6, 8), cos, sin)
    assert not cos.is_inference()
    x = torch.randn(1, 1, 6, 8, requires_grad=True)
    tables = rope.grid(2, 3)  # the same entry, usable by autograd
    assert tables[0] is cos and len(rope._cache) == 1
    apply_rope(x, *tables).square().sum().backward()
    assert x.grad is not None


def test_rotation_is_real_valued():
    """The rotation adds no complex tensors to a traced graph."""
    rope = RotaryEmbedding2D(8)
    x = torch.randn(1, 2, 6, 8)
    graph = torch.jit.trace(lambda t: apply_rope(t, *rope.grid(2, 3)),
                            (x, )).graph
    kinds = {n.kind() for n in graph.nodes()}
    assert not {k for k in kinds if 'complex' in k}
    for n in graph.nodes():
        for out in n.outputs():
            t = out.type()
            if isinstance(t, torch._C.TensorType) and t.scalarType():
                assert 'Complex' not in t.scalarType()

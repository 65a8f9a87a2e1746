"""Reference Pyramid VisionLLaMA forward for parity tests, from the docs.

Written from docs/visionllama.md#reference-formula-and-tested-properties
(complex RoPE), docs/pyramid.md (pyramid numerics) and
docs/pyramid.md#checkpoint-layout (official key names), independent of the
package: it works directly on an official deit-format ``model`` state dict,
rotates with complex numbers built in fp32 (the official numerics) and places
the GSA keys with the formulas of the docs/pyramid.md#gsa-key-positions table.
Complex dtypes are allowed in tests only.
"""
import math

import torch
import torch.nn.functional as F

# A small four-stage arch (head dims 32, padded windows at small inputs)
# shared by the backbone, converter and dense parity tests.
TINY = dict(
    embed_dims=[32, 64, 96, 128],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 3, 4],
    window_sizes=[7, 7, 7, 7],
    sr_ratios=[8, 4, 2, 1])


def official_arch_state_dict(embed_dims,
                             depths,
                             sr_ratios,
                             num_classes=10,
                             in_channels=3,
                             patch_sizes=(4, 2, 2, 2),
                             seed=0):
    """Random weights with the official key names and shapes
    (docs/pyramid.md#checkpoint-layout)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.02, mean=0.):
        return torch.randn(*shape, generator=g) * std + mean

    def ln(prefix, c, sd):
        sd[prefix + 'weight'] = rnd(c, std=0.1, mean=1.)
        sd[prefix + 'bias'] = rnd(c, std=0.1)

    def linear(prefix, c_out, c_in, sd, bias=True):
        sd[prefix + 'weight'] = rnd(c_out, c_in, std=c_in**-0.5)
        if bias:
            sd[prefix + 'bias'] = rnd(c_out, std=0.1)

    sd = {}
    c_prev = in_channels
    for k, c in enumerate(embed_dims):
        p = patch_sizes[k]
        sd[f'patch_embeds.{k}.proj.weight'] = rnd(
            c, c_prev, p, p, std=(c_prev * p * p)**-0.5)
        sd[f'patch_embeds.{k}.proj.bias'] = rnd(c, std=0.1)
        ln(f'patch_embeds.{k}.norm.', c, sd)
        hidden = 256 * math.ceil(int(8 * c / 3) / 256)
        s = sr_ratios[k]
        for j in range(depths[k]):
            b = f'blocks.{k}.{j}.'
            ln(b + 'norm1.', c, sd)
            ln(b + 'norm2.', c, sd)
            # strong layer scales so that every branch matters
            sd[b + 'gamma_1'] = rnd(c, std=0.3, mean=0.5)
            sd[b + 'gamma_2'] = rnd(c, std=0.3, mean=0.5)
            if j % 2 == 0:
                linear(b + 'attn.qkv.', 3 * c, c, sd)
            else:
                linear(b + 'attn.q.', c, c, sd)
                linear(b + 'attn.kv.', 2 * c, c, sd)
                if s > 1:
                    sd[b + 'attn.sr.weight'] = rnd(
                        c, c, s, s, std=(c * s * s)**-0.5)
                    sd[b + 'attn.sr.bias'] = rnd(c, std=0.1)
                    ln(b + 'attn.norm.', c, sd)
            linear(b + 'attn.proj.', c, c, sd)
            linear(b + 'mlp.c_fc1.', hidden, c, sd, bias=False)
            linear(b + 'mlp.c_fc2.', hidden, c, sd, bias=False)
            linear(b + 'mlp.c_proj.', c, hidden, sd, bias=False)
        c_prev = c
    ln('norm.', embed_dims[-1], sd)
    linear('head.', num_classes, embed_dims[-1], sd)
    return sd


# -- RoPE (docs/visionllama.md#frequencies-and-channel-layout,
# docs/visionllama.md#reference-formula-and-tested-properties), complex, tables
# built in fp32 ---


def cis(xs, ys, head_dim):
    """exp(i phi) per pair, phi = [x t0, y t0, x t1, y t1, ...] (fp32)."""
    theta = 1.0 / (10000.0**(torch.arange(0, head_dim, 4).float() / head_dim))
    ax = torch.outer(xs.float(), theta)
    ay = torch.outer(ys.float(), theta)
    angles = torch.stack([ax, ay], dim=-1).flatten(1)  # (N, d / 2)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(t, table):
    """Rotate the adjacent channel pairs of t (..., N, d) as complex."""
    z = torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2))
    return torch.view_as_real(z * table).flatten(-2).type_as(t)


def query_coords(H, W, scale):
    n = torch.arange(H * W)
    return (n % W) * scale, (n // W) * scale


def key_coords(H, W, s, mode, scale):
    """GSA key coordinates of the docs/pyramid.md#gsa-key-positions table."""
    if mode == 'official':
        j = torch.arange((H * W) // (s * s))
        off = 1.0 - 1.0 / s
        return (off + (j % W) * s) * scale, (off + (j // W) * s) * scale
    Hr, Wr = H // s, W // s
    j = torch.arange(Hr * Wr)
    off = (s - 1) / 2.
    return (off + (j % Wr) * s) * scale, (off + (j // Wr) * s) * scale


# -- layers ----------------------------------------------------------------


def layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + 'weight'],
                        sd[prefix + 'bias'], 1e-5)


def attention(q, k, v):
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5
    return attn.softmax(dim=-1) @ v


def lsa(x, H, W, sd, prefix, heads, ws=7):
    """docs/pyramid.md#locally-grouped-attention-lsa: pad before qkv, windows,
    window-local RoPE, no mask."""
    B, N, C = x.shape
    d = C // heads
    t = x.view(B, H, W, C)
    pad_b, pad_r = (-H) % ws, (-W) % ws
    t = F.pad(t, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = H + pad_b, W + pad_r
    t = t.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    t = t.reshape(B, -1, ws * ws, C)
    qkv = F.linear(t, sd[prefix + 'qkv.weight'], sd[prefix + 'qkv.bias'])
    qkv = qkv.view(B, -1, ws * ws, 3, heads, d).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nW, heads, ws^2, d)
    n = torch.arange(ws * ws)
    table = cis(n % ws, n // ws, d)
    out = attention(rotate(q, table), rotate(k, table), v)
    out = out.permute(0, 1, 3, 2, 4).reshape(B, Hp // ws, Wp // ws, ws, ws, C)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)[:, :H, :W]
    return F.linear(
        out.reshape(B, N, C), sd[prefix + 'proj.weight'],
        sd[prefix + 'proj.bias'])


def gsa(x, H, W, sd, prefix, heads, s, mode, scale):
    """docs/pyramid.md#global-sub-sampled-attention-gsa,
    docs/pyramid.md#gsa-key-positions: sub-sampled keys at the official /
    centroid positions."""
    B, N, C = x.shape
    d = C // heads
    q = F.linear(x, sd[prefix + 'q.weight'], sd[prefix + 'q.bias'])
    q = q.view(B, N, heads, d).transpose(1, 2)
    r = x
    if s > 1:
        r = x.transpose(1, 2).reshape(B, C, H, W)
        r = F.conv2d(
            r, sd[prefix + 'sr.weight'], sd[prefix + 'sr.bias'], stride=s)
        r = layer_norm(r.flatten(2).transpose(1, 2), sd, prefix + 'norm.')
    kv = F.linear(r, sd[prefix + 'kv.weight'], sd[prefix + 'kv.bias'])
    kv = kv.view(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    q = rotate(q, cis(*query_coords(H, W, scale), d))
    k = rotate(k, cis(*key_coords(H, W, s, mode, scale), d))
    out = attention(q, k, v).transpose(1, 2).reshape(B, N, C)
    return F.linear(out, sd[prefix + 'proj.weight'], sd[prefix + 'proj.bias'])


def reference_forward(sd,
                      img,
                      num_heads,
                      depths,
                      sr_ratios,
                      key_pos='official',
                      auto_scale=False,
                      base_size=14,
                      dense=False,
                      patch_sizes=(4, 2, 2, 2)):
    """The deit classifier's logits, or the four dense NCHW maps.

    ``dense=True`` follows the seg / det backbone: a LayerNorm with unit
    weight and zero bias (a fresh ``norm_list`` entry) after each stage,
    whose output is returned and feeds the next stage.
    """
    x = img
    B = img.shape[0]
    outs = []
    for k in range(len(depths)):
        p = f'patch_embeds.{k}.'
        x = F.conv2d(
            x,
            sd[p + 'proj.weight'],
            sd[p + 'proj.bias'],
            stride=patch_sizes[k])
        H, W = x.shape[-2:]
        x = layer_norm(x.flatten(2).transpose(1, 2), sd, p + 'norm.')
        scale = base_size / H if auto_scale else 1.0
        for j in range(depths[k]):
            b = f'blocks.{k}.{j}.'
            y = layer_norm(x, sd, b + 'norm1.')
            if j % 2 == 0:
                a = lsa(y, H, W, sd, b + 'attn.', num_heads[k])
            else:
                a = gsa(y, H, W, sd, b + 'attn.', num_heads[k], sr_ratios[k],
                        key_pos, scale)
            x = x + sd[b + 'gamma_1'] * a
            y = layer_norm(x, sd, b + 'norm2.')
            m = F.silu(F.linear(y, sd[b + 'mlp.c_fc1.weight'])) * F.linear(
                y, sd[b + 'mlp.c_fc2.weight'])
            x = x + sd[b + 'gamma_2'] * F.linear(m,
                                                 sd[b + 'mlp.c_proj.weight'])
        if dense:
            x = F.layer_norm(x, x.shape[-1:], eps=1e-5)
            outs.append(x.transpose(1, 2).reshape(B, -1, H, W))
        if k < len(depths) - 1:
            x = x.transpose(1, 2).reshape(B, -1, H, W)
    if dense:
        return outs
    z = layer_norm(x, sd, 'norm.')
    # the double norm (docs/pyramid.md#heads-and-outputs)
    feat = layer_norm(z.mean(dim=1), sd, 'norm.')
    return F.linear(feat, sd['head.weight'], sd['head.bias'])


def arch_state_dict(arch, **kwargs):
    """:func:`official_arch_state_dict` for an arch dict (e.g. TINY)."""
    return official_arch_state_dict(arch['embed_dims'], arch['depths'],
                                    arch['sr_ratios'], **kwargs)


def arch_forward(sd, img, arch, **kwargs):
    """:func:`reference_forward` for an arch dict (e.g. TINY)."""
    return reference_forward(sd, img, arch['num_heads'], arch['depths'],
                             arch['sr_ratios'], **kwargs)

"""Reference DiT-LLaMA / SiT-LLaMA forward written from the docs
(docs/generation.md#model).

Functional, float64, over a state dict in the *official* layout
(docs/generation.md#checkpoint-layout), with 2D RoPE in the complex form of
docs/visionllama.md#reference-formula-and-tested-properties (complex dtypes are
allowed in tests only). Used by the model and converter parity tests.
"""
import argparse
import math

import torch
import torch.nn.functional as F


def llama_hidden(dim):
    """ceil256(floor(8 D / 3)), docs/generation.md#variants."""
    return 256 * math.ceil(int(8 * dim / 3) / 256)


def official_state_dict(depth,
                        dim,
                        patch,
                        in_ch=4,
                        num_classes=10,
                        learn_sigma=True,
                        grid=4,
                        seed=0,
                        std=0.05):
    """Random weights with the official keys and shapes (incl. pos_embed)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * std

    out_ch = in_ch * 2 if learn_sigma else in_ch
    hid = llama_hidden(dim)
    sd = {
        'x_embedder.proj.weight': r(dim, in_ch, patch, patch),
        'x_embedder.proj.bias': r(dim),
        'pos_embed': r(1, grid * grid, dim),
        't_embedder.mlp.0.weight': r(dim, 256),
        't_embedder.mlp.0.bias': r(dim),
        't_embedder.mlp.2.weight': r(dim, dim),
        't_embedder.mlp.2.bias': r(dim),
        'y_embedder.embedding_table.weight': r(num_classes + 1, dim),
        'final_layer.linear.weight': r(patch * patch * out_ch, dim),
        'final_layer.linear.bias': r(patch * patch * out_ch),
        'final_layer.adaLN_modulation.1.weight': r(2 * dim, dim),
        'final_layer.adaLN_modulation.1.bias': r(2 * dim),
    }
    for i in range(depth):
        p = f'blocks.{i}.'
        sd.update({
            p + 'attn.qkv.weight': r(3 * dim, dim),
            p + 'attn.qkv.bias': r(3 * dim),
            p + 'attn.proj.weight': r(dim, dim),
            p + 'attn.proj.bias': r(dim),
            p + 'mlp.c_fc1.weight': r(hid, dim),
            p + 'mlp.c_fc2.weight': r(hid, dim),
            p + 'mlp.c_proj.weight': r(dim, hid),
            p + 'adaLN_modulation.1.weight': r(6 * dim, dim),
            p + 'adaLN_modulation.1.bias': r(6 * dim),
        })
    return sd


def official_checkpoint(model_name='DiTLLaMA_B_4', **kwargs):
    """An official-format container {'model', 'ema', 'opt', 'args'}."""
    ema = official_state_dict(seed=1, **kwargs)
    model = official_state_dict(seed=2, **kwargs)
    args = argparse.Namespace(
        model=model_name,
        image_size=256,
        num_classes=kwargs.get('num_classes', 10),
        global_seed=0,
        epochs=80)
    return {'model': model, 'ema': ema, 'opt': {}, 'args': args}


def rope_complex(q, height, width, base=10000.):
    """Rotate (B, h, N, d) by exp(i phi_j), phi_j = (x|y) theta_{j//2}."""
    d = q.shape[-1]
    theta = base**(-4. * torch.arange(d // 4, dtype=torch.float64) / d)
    n = torch.arange(height * width)
    x = (n % width).double()
    y = (n // width).double()
    phi = torch.stack([x[:, None] * theta, y[:, None] * theta],
                      dim=-1).reshape(height * width, d // 2)
    z = torch.view_as_complex(q.double().reshape(*q.shape[:-1], d // 2, 2))
    z = z * torch.polar(torch.ones_like(phi), phi)
    return torch.view_as_real(z).flatten(-2)


def reference_forward(sd, x, t, y, num_heads, learn_sigma=True, sit=False):
    """docs/generation.md#model forward in float64. ``pos_embed`` is present
    but unused."""
    sd = {k: v.double() for k, v in sd.items()}
    x, t = x.double(), t.double()
    w = sd['x_embedder.proj.weight']
    D, p = w.shape[0], w.shape[2]
    N, _, H, W = x.shape
    h, wd = H // p, W // p
    tok = F.conv2d(x, w, sd['x_embedder.proj.bias'], stride=p)
    tok = tok.flatten(2).transpose(1, 2)  # (N, T, D)

    half = 128
    freqs = torch.exp(-math.log(10000.) *
                      torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    temb = F.linear(temb, sd['t_embedder.mlp.0.weight'],
                    sd['t_embedder.mlp.0.bias'])
    temb = F.linear(
        F.silu(temb), sd['t_embedder.mlp.2.weight'],
        sd['t_embedder.mlp.2.bias'])
    c = temb + sd['y_embedder.embedding_table.weight'][y]

    def ln(v):
        return F.layer_norm(v, (D, ), eps=1e-6)

    def mod(v, shift, scale):
        return v * (1 + scale[:, None]) + shift[:, None]

    depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
    hd = D // num_heads
    for i in range(depth):
        b = f'blocks.{i}.'
        m = F.linear(
            F.silu(c), sd[b + 'adaLN_modulation.1.weight'],
            sd[b + 'adaLN_modulation.1.bias']).chunk(
                6, dim=1)
        a = mod(ln(tok), m[0], m[1])
        qkv = F.linear(a, sd[b + 'attn.qkv.weight'], sd[b + 'attn.qkv.bias'])
        qkv = qkv.reshape(N, h * wd, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = rope_complex(q, h, wd), rope_complex(k, h, wd)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(hd)).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(N, h * wd, D)
        a = F.linear(a, sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'])
        tok = tok + m[2][:, None] * a
        f = mod(ln(tok), m[3], m[4])
        f = F.linear(
            F.silu(F.linear(f, sd[b + 'mlp.c_fc1.weight'])) *
            F.linear(f, sd[b + 'mlp.c_fc2.weight']),
            sd[b + 'mlp.c_proj.weight'])
        tok = tok + m[5][:, None] * f
    shift, scale = F.linear(
        F.silu(c), sd['final_layer.adaLN_modulation.1.weight'],
        sd['final_layer.adaLN_modulation.1.bias']).chunk(
            2, dim=1)
    out = F.linear(
        mod(ln(tok), shift, scale), sd['final_layer.linear.weight'],
        sd['final_layer.linear.bias'])
    C = out.shape[-1] // (p * p)
    # token (i, j) holds a (p, p, C) block
    out = out.reshape(N, h, wd, p, p, C).permute(0, 5, 1, 3, 2, 4)
    out = out.reshape(N, C, h * p, wd * p)
    if sit and learn_sigma:
        out = out[:, :C // 2]
    return out

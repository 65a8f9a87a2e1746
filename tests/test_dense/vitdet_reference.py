"""Reference LLaMADET forward written from docs/visionllama.md#2d-rope,
docs/dense.md#vitdet-backbone (float64, loops).

Independent of the package's RoPE, attention and window code: angles from
the formula, manual softmax attention, explicit per-window loops.
"""
import math

import torch
import torch.nn.functional as F


def rope_ref(t, xs, ys):
    """docs/visionllama.md#2d-rope: pair j rotates by (x if j even else y) *
    1e4^(-4 (j//2)/d)."""
    d = t.shape[-1]
    theta = 10000.**(-4. * torch.arange(d // 4, dtype=torch.float64) / d)
    ang = torch.stack([xs[:, None] * theta, ys[:, None] * theta],
                      -1).reshape(len(xs), d // 2)
    cos, sin = ang.cos(), ang.sin()
    a, b = t[..., 0::2], t[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


def attn_ref(attn, x, xs, ys, key_valid=None):
    """Manual multi-head attention of (N, C) tokens with RoPE."""
    N, C = x.shape
    h = attn.num_heads
    d = C // h
    qkv = F.linear(x, attn.qkv.weight.double(), attn.qkv.bias.double())
    q, k, v = qkv.view(N, 3, h, d).permute(1, 2, 0, 3)
    q, k = rope_ref(q, xs, ys), rope_ref(k, xs, ys)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[None, None], float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(0, 1).reshape(N, C)
    return F.linear(out, attn.proj.weight.double(), attn.proj.bias.double())


def block_ref(layer, x, H, W, window, mask_padding):
    """One block on (H * W, C) tokens of one image (float64)."""
    C = x.shape[-1]
    ln1 = F.layer_norm(x, (C, ), layer.ln1.weight.double(),
                       layer.ln1.bias.double(), layer.ln1.eps)
    if window is None:
        n = torch.arange(H * W, dtype=torch.float64)
        a = attn_ref(layer.attn, ln1, n % W,
                     torch.div(n, W, rounding_mode='floor'))
    else:
        ws = window
        Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
        grid = torch.zeros(Hp, Wp, C, dtype=torch.float64)
        grid[:H, :W] = ln1.view(H, W, C)
        valid = torch.zeros(Hp, Wp, dtype=torch.bool)
        valid[:H, :W] = True
        out = torch.zeros_like(grid)
        r = torch.arange(ws * ws, dtype=torch.float64)
        lx, ly = r % ws, torch.div(r, ws, rounding_mode='floor')
        for i in range(0, Hp, ws):
            for j in range(0, Wp, ws):
                tok = grid[i:i + ws, j:j + ws].reshape(ws * ws, C)
                kv = valid[i:i + ws, j:j + ws].reshape(-1)
                out[i:i + ws, j:j + ws] = attn_ref(
                    layer.attn, tok, lx, ly,
                    kv if mask_padding else None).view(ws, ws, C)
        a = out[:H, :W].reshape(H * W, C)
    x = x + a
    ln2 = F.layer_norm(x, (C, ), layer.ln2.weight.double(),
                       layer.ln2.bias.double(), layer.ln2.eps)
    ffn = layer.ffn
    gate, up = F.linear(ln2, ffn.w12.weight.double(),
                        ffn.w12.bias.double()).chunk(2, -1)
    return x + F.linear(
        F.silu(gate) * up, ffn.w3.weight.double(), ffn.w3.bias.double())


def backbone_ref(model, img, mask_padding=False):
    """(C, H/16, W/16) output of the last block for one image."""
    pe = model.patch_embed.projection
    feat = F.conv2d(
        img[None].double(),
        pe.weight.double(),
        pe.bias.double(),
        stride=pe.stride)[0]
    C, H, W = feat.shape
    x = feat.flatten(1).t()
    for i, layer in enumerate(model.layers):
        window = model.window_size if model.is_window_block(i) else None
        x = block_ref(layer, x, H, W, window, mask_padding)
    return x.t().reshape(C, H, W)

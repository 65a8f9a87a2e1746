"""Reference LLaMA-Adapter V2 forward written from the docs, for tests.

Independent of the package: it works on an *official* state dict (Meta
layout, official names: ``llama.layers.i.attention.wq.weight`` ...), uses
Meta's adjacent-pair RoPE, and implements docs/llama_adapter_v2.md#architecture
with explicit softmaxes. Only the CLIP tower itself is taken from transformers.
"""
import math

import torch
import torch.nn.functional as F

# our transformers-name -> Meta-name map for the *base* LLaMA
# (docs/llama_adapter_v2.md#mapping-to-transformers-llama), written here
# independently of the package
_HF_TO_META = {
    'self_attn.q_proj': 'attention.wq',
    'self_attn.k_proj': 'attention.wk',
    'self_attn.v_proj': 'attention.wv',
    'self_attn.o_proj': 'attention.wo',
    'mlp.gate_proj': 'feed_forward.w1',
    'mlp.down_proj': 'feed_forward.w2',
    'mlp.up_proj': 'feed_forward.w3',
    'input_layernorm': 'attention_norm',
    'post_attention_layernorm': 'ffn_norm',
}


def hf_rows_to_meta(w, n_heads):
    """transformers row i + t*d/2 -> Meta row 2i + t within each head."""
    d = w.shape[0] // n_heads
    out = torch.empty_like(w)
    for h in range(n_heads):
        for i in range(d // 2):
            for t in range(2):
                out[h * d + 2 * i + t] = w[h * d + i + t * d // 2]
    return out


def meta_base_from_hf(llama, n_heads):
    """Official (Meta layout) base LLaMA weights of a transformers model."""
    sd = {}
    for key, value in llama.state_dict().items():
        if not key.endswith('.weight') or 'lora' in key:
            continue
        if key == 'model.embed_tokens.weight':
            sd['llama.tok_embeddings.weight'] = value
        elif key == 'model.norm.weight':
            sd['llama.norm.weight'] = value
        elif key == 'lm_head.weight':
            sd['llama.output.weight'] = value
        else:
            parts = key.split('.')
            idx, mod = parts[2], '.'.join(parts[3:-1])
            if mod not in _HF_TO_META:
                continue
            if mod in ('self_attn.q_proj', 'self_attn.k_proj'):
                value = hf_rows_to_meta(value, n_heads)
            sd[f'llama.layers.{idx}.{_HF_TO_META[mod]}.weight'] = value
    return sd


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf *
            torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def rope_meta(x, positions, theta=10000.0):
    """Adjacent-pair rotation; x: (B, T, H, d), positions: (T,)."""
    d = x.shape[-1]
    freqs = theta**(-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = positions.double()[:, None] * freqs[None]
    cos = ang.cos().float()[None, :, None]
    sin = ang.sin().float()[None, :, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos],
                       dim=-1).flatten(-2)


def linear(x, sd, name, bias_mode='mm7b', lora=True):
    """One official linear layer: frozen W plus bias/scale/LoRA."""
    w = sd[name + '.weight']
    b = sd.get(name + '.bias')
    s = sd.get(name + '.scale')
    if bias_mode == 'c65b':
        y = (x * s) @ w.t() + b
    elif bias_mode == 'paper':
        y = s * (x @ w.t() + b)
    else:
        y = x @ w.t()
        if b is not None:
            y = y + b
    module, leaf = name.rsplit('.', 1)
    l1 = f'{module}.lora_{leaf}_l1.weight'
    if lora and l1 in sd:
        y = y + x @ sd[l1].t() @ sd[f'{module}.lora_{leaf}_l2.weight'].t()
    return y


def visual_query(feats, sd, query_len, num_heads):
    """Bridge (docs/llama_adapter_v2.md#visual-path) on CLIP features (B, N,
    clip_dim)."""
    x = feats @ sd['clip_proj.weight'].t() + sd['clip_proj.bias']
    x = F.layer_norm(x, (x.shape[-1], ), sd['clip_proj_norm.weight'],
                     sd['clip_proj_norm.bias'])
    b = x.shape[0]
    x = torch.cat([sd['visual_query.weight'][None].expand(b, -1, -1), x], 1)
    c = x.shape[-1]
    i = 0
    while f'visual_blocks.{i}.norm1.weight' in sd:
        p = f'visual_blocks.{i}.'
        h = F.layer_norm(x, (c, ), sd[p + 'norm1.weight'],
                         sd[p + 'norm1.bias'])
        qkv = h @ sd[p + 'attn.qkv.weight'].t() + sd[p + 'attn.qkv.bias']
        q, k, v = qkv.view(b, -1, 3, num_heads,
                           c // num_heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // num_heads),
                          -1) @ v
        a = a.transpose(1, 2).reshape(b, -1, c)
        x = x + a @ sd[p + 'attn.proj.weight'].t() + sd[p + 'attn.proj.bias']
        h = F.layer_norm(x, (c, ), sd[p + 'norm2.weight'],
                         sd[p + 'norm2.bias'])
        h = F.gelu(h @ sd[p + 'mlp.fc1.weight'].t() + sd[p + 'mlp.fc1.bias'])
        x = x + h @ sd[p + 'mlp.fc2.weight'].t() + sd[p + 'mlp.fc2.bias']
        i += 1
    x = x[:, :query_len]
    x = x @ sd['visual_proj.weight'].t() + sd['visual_proj.bias']
    return F.layer_norm(x, (x.shape[-1], ), sd['visual_proj_norm.weight'],
                        sd['visual_proj_norm.bias'])


def llama_adapter_logits(tokens,
                         visual,
                         sd,
                         n_layers,
                         n_heads,
                         query_len,
                         query_layer,
                         fusion='late',
                         bias_mode='mm7b',
                         eps=1e-6):
    """Logits (B, T, vocab) of the adapter LLaMA
    (docs/llama_adapter_v2.md#architecture)."""
    b, t = tokens.shape
    h = sd['llama.tok_embeddings.weight'][tokens]
    dim = h.shape[-1]
    d = dim // n_heads
    pos = torch.arange(t)
    causal = torch.full((t, t), float('-inf')).triu(1)
    adapter = sd['adapter_query.weight'].view(query_layer, query_len, dim)
    start = n_layers - query_layer
    for layer in range(n_layers):
        p = f'llama.layers.{layer}.'
        prompt = None
        if layer >= start:
            prompt = adapter[layer - start][None].expand(b, -1, -1)
            if fusion == 'late' and visual is not None:
                prompt = prompt + visual
        if fusion == 'early' and layer == 0 and visual is not None:
            prompt = visual
        x = rms_norm(h, sd[p + 'attention_norm.weight'], eps)

        def lin(inp, name, lora=True):
            return linear(inp, sd, p + name, bias_mode, lora)

        q = rope_meta(lin(x, 'attention.wq').view(b, t, n_heads, d), pos)
        k = rope_meta(lin(x, 'attention.wk').view(b, t, n_heads, d), pos)
        v = lin(x, 'attention.wv').view(b, t, n_heads, d)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(2, 3) / math.sqrt(d) + causal
        out = torch.softmax(scores.float(), -1).type_as(q) @ v
        if prompt is not None:
            kp = lin(
                prompt, 'attention.wk', lora=False).view(b, -1, n_heads,
                                                         d).transpose(1, 2)
            vp = lin(
                prompt, 'attention.wv', lora=False).view(b, -1, n_heads,
                                                         d).transpose(1, 2)
            sp = torch.softmax((q @ kp.transpose(2, 3) / math.sqrt(d)).float(),
                               -1).type_as(q)
            sp = torch.tanh(sd[p + 'attention.gate']) * sp
            if p + 'attention.new_gate' in sd:
                sp = sd[p + 'attention.new_gate'] * sp
            out = out + sp @ vp
        out = out.transpose(1, 2).reshape(b, t, dim)
        h = h + lin(out, 'attention.wo')
        x = rms_norm(h, sd[p + 'ffn_norm.weight'], eps)
        ff = F.silu(lin(x, 'feed_forward.w1')) * lin(x, 'feed_forward.w3')
        h = h + lin(ff, 'feed_forward.w2')
    h = rms_norm(h, sd['llama.norm.weight'], eps)
    return h @ sd['llama.output.weight'].t()

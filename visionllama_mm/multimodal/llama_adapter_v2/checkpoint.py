"""Checkpoint layouts of LLaMA-Adapter V2
(docs/llama_adapter_v2.md#checkpoints).

Three layouts meet here:

* **Meta LLaMA** (``consolidated.00.pth`` + ``params.json``): ``layers.i.
  attention.wq`` ... in Meta's adjacent-pair RoPE layout.
* **transformers LLaMA** (``model.layers.i.self_attn.q_proj`` ...): q/k rows
  permuted within each head for rotate-half RoPE
  (docs/llama_adapter_v2.md#mapping-to-transformers-llama). Our model wraps
  this one.
* **Released adapter files** (``{'model': ..., 'config': ...}``) and the
  state dicts our model saves: official LLaMA-Adapter names (``llama.layers.
  i.attention.wq.bias``, ``visual_blocks.0.attn.qkv.weight`` ...) in Meta
  layout, holding only the adapter-side tensors.

Row permutation: Meta row ``2i + t`` (t in {0, 1}) of each head is
transformers row ``i + t * head_dim / 2``. It applies to every per-output-row
tensor of ``wq``/``wk``: weight, bias, output scale (``bias_mode='paper'``)
and LoRA-B (``lora_w{q,k}_l2``); input-side tensors (LoRA-A, input scale)
are unchanged.
"""
import os
import os.path as osp
import re
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    'meta_to_hf_rows', 'hf_to_meta_rows', 'hf_to_official_key',
    'official_to_hf_key', 'needs_row_permutation', 'load_tensors',
    'load_adapter_file', 'save_adapter_file', 'load_meta_llama_state_dict',
    'merge_meta_shards', 'META_SHARD_DIMS', 'meta_params_to_hf_config',
    'load_mmpretrain_clip', 'expected_adapter_shapes', 'check_adapter_state',
    'is_frozen_base', 'official_layer_index'
]

_LINEARS = {
    'self_attn.q_proj': 'attention.wq',
    'self_attn.k_proj': 'attention.wk',
    'self_attn.v_proj': 'attention.wv',
    'self_attn.o_proj': 'attention.wo',
    'mlp.gate_proj': 'feed_forward.w1',
    'mlp.down_proj': 'feed_forward.w2',
    'mlp.up_proj': 'feed_forward.w3',
}
_TOP = {
    'model.embed_tokens.weight': 'tok_embeddings.weight',
    'model.norm.weight': 'norm.weight',
    'lm_head.weight': 'output.weight',
}
_TOP_INV = {v: k for k, v in _TOP.items()}
_NORMS = {
    'input_layernorm': 'attention_norm',
    'post_attention_layernorm': 'ffn_norm'
}


def _layer_key_table() -> Dict[str, str]:
    """Every key inside one decoder layer: transformers name -> Meta name
    (norm weights, the adapter gates, the linears' weight / bias / scale and
    their LoRA factors)."""
    table = {f'{hf}.weight': f'{meta}.weight' for hf, meta in _NORMS.items()}
    for gate in ('gate', 'new_gate'):
        table[f'self_attn.{gate}'] = f'attention.{gate}'
    for hf, meta in _LINEARS.items():
        module, name = meta.split('.')
        for leaf in ('weight', 'bias', 'scale'):
            table[f'{hf}.{leaf}'] = f'{meta}.{leaf}'
        for factor in ('l1', 'l2'):
            table[f'{hf}.lora_{factor}.weight'] = \
                f'{module}.lora_{name}_{factor}.weight'
    return table


_LAYER_KEYS = _layer_key_table()
_LAYER_KEYS_INV = {v: k for k, v in _LAYER_KEYS.items()}

_HF_LAYER = re.compile(r'^model\.layers\.(\d+)\.(.+)$')
_META_LAYER = re.compile(r'^layers\.(\d+)\.(.+)$')
# The frozen base of the LLaMA (Meta names): never trained, never saved in
# adapter files.
_FROZEN_BASE = re.compile(r'^(tok_embeddings\.weight|output\.weight|'
                          r'layers\.\d+\.(attention\.w[qkvo]|'
                          r'feed_forward\.w[123])\.weight)$')
_OFFICIAL_LAYER = re.compile(r'^llama\.layers\.(\d+)\.')


def meta_to_hf_rows(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of a q/k tensor from Meta to transformers layout."""
    rows = t.shape[0]
    d = rows // n_heads
    return t.reshape(n_heads, d // 2, 2,
                     *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def hf_to_meta_rows(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of :func:`meta_to_hf_rows`."""
    rows = t.shape[0]
    d = rows // n_heads
    return t.reshape(n_heads, 2, d // 2,
                     *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def hf_to_official_key(key: str) -> Optional[str]:
    """transformers/our LLaMA key (relative to ``LlamaForCausalLM``) to the
    Meta/official key (relative to ``llama.``); None if unknown."""
    if key in _TOP:
        return _TOP[key]
    m = _HF_LAYER.match(key)
    if m is None or m.group(2) not in _LAYER_KEYS:
        return None
    return f'layers.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}'


def official_to_hf_key(key: str) -> Optional[str]:
    """Inverse of :func:`hf_to_official_key`; None if unknown."""
    if key in _TOP_INV:
        return _TOP_INV[key]
    m = _META_LAYER.match(key)
    if m is None or m.group(2) not in _LAYER_KEYS_INV:
        return None
    return f'model.layers.{m.group(1)}.{_LAYER_KEYS_INV[m.group(2)]}'


def is_frozen_base(official_key: str) -> bool:
    """Whether an official adapter-model key (``llama.layers.0.attention.
    wq.weight``) names a frozen LLaMA base weight (token embedding, output
    and the linear weights), which adapter files leave out."""
    return official_key.startswith('llama.') and _FROZEN_BASE.match(
        official_key[len('llama.'):]) is not None


def official_layer_index(official_key: str) -> Optional[int]:
    """LLaMA layer of an official adapter-model key (``llama.layers.{i}.``),
    or None for keys outside the layers."""
    m = _OFFICIAL_LAYER.match(official_key)
    return None if m is None else int(m.group(1))


def needs_row_permutation(official_key: str,
                          bias_mode: str = 'mm7b') -> Optional[str]:
    """Whether an official LLaMA tensor has q/k rows to permute.

    Returns:
        str | None: ``'q'`` or ``'k'`` (permute with the query or key/value
        head count) or None.
    """
    m = re.search(
        r'attention\.(?:w([qk])\.(weight|bias|scale)|'
        r'lora_w([qk])_l2\.weight)$', official_key)
    if m is None:
        return None
    if m.group(2) == 'scale' and bias_mode != 'paper':
        return None
    return m.group(1) or m.group(3)


def load_tensors(path: str) -> dict:
    """Load a checkpoint with ``weights_only=True`` (never unpickles code).

    Uses :func:`visionllama_mm.compat.load_checkpoint_safe` when available.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    try:
        from visionllama_mm.compat import load_checkpoint_safe
    except ImportError:
        load_checkpoint_safe = None
    if load_checkpoint_safe is not None:
        return load_checkpoint_safe(path, trusted=False)
    return torch.load(path, map_location='cpu', weights_only=True)


def load_adapter_file(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Read a released LLaMA-Adapter V2 file, or one written by
    :func:`save_adapter_file`, with ``weights_only=True``.

    Args:
        path (str): ``BIAS-7B.pth`` style file ``{'model', 'config'}`` or a
            converted ``{'state_dict', 'meta'}`` file.

    Returns:
        tuple: ``(state_dict, config)`` with official key names; ``config``
        holds ``w_bias``/``w_lora``/``lora_rank`` when the file says so.
    """
    ckpt = load_tensors(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a dict, got {type(ckpt)}')
    if 'model' in ckpt and isinstance(ckpt['model'], dict):
        state, config = ckpt['model'], dict(ckpt.get('config') or {})
    elif 'state_dict' in ckpt:
        state = ckpt['state_dict']
        config = dict((ckpt.get('meta') or {}).get('adapter_config') or {})
    else:
        state, config = ckpt, {}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: non-tensor entries {bad[:5]}')
    # Training checkpoints of the released code misspell the prefix
    # (``llma.``); its loader renames them the same way.
    state = {
        ('llama.' + k[5:] if k.startswith('llma.') else k): v
        for k, v in state.items()
    }
    return state, config


def save_adapter_file(state: Dict[str, torch.Tensor],
                      path: str,
                      config: Optional[dict] = None,
                      meta: Optional[dict] = None) -> None:
    """Write a tensors-only adapter file loadable by mmengine and
    :func:`load_adapter_file` (``{'state_dict', 'meta'}``)."""
    meta = dict(meta or {})
    meta['adapter_config'] = dict(config or {})
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save(
        {
            'state_dict': {
                k: v.contiguous()
                for k, v in state.items()
            },
            'meta': meta
        }, path)


def ffn_hidden_dim(dim: int,
                   multiple_of: int,
                   ffn_dim_multiplier: Optional[float] = None) -> int:
    """Meta's SwiGLU hidden size: ceil_m(int(2 * 4 * dim / 3))."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def meta_params_to_hf_config(params: dict, vocab_size: int, **overrides):
    """``params.json`` of Meta's LLaMA to a transformers ``LlamaConfig``.

    Args:
        params (dict): ``dim``, ``n_layers``, ``n_heads``, ``multiple_of``,
            ``norm_eps`` and optionally ``n_kv_heads`` (grouped-query
            attention: LLaMA-2-70B, LLaMA-3), ``ffn_dim_multiplier``,
            ``rope_theta``, ``use_scaled_rope`` (LLaMA-3.1) and
            ``vocab_size`` (-1: take it from the tokenizer).
        vocab_size (int): Tokenizer size, used when ``params`` has none.
        **overrides: Other ``LlamaConfig`` arguments.

    Returns:
        transformers.LlamaConfig
    """
    from transformers import LlamaConfig
    missing = [k for k in ('dim', 'n_layers', 'n_heads') if k not in params]
    if missing:
        raise ValueError(f'LLaMA params miss {missing}')
    vocab = params.get('vocab_size', -1)
    vocab = vocab_size if vocab is None or vocab < 0 else vocab
    cfg = dict(
        hidden_size=params['dim'],
        intermediate_size=ffn_hidden_dim(params['dim'],
                                         params.get('multiple_of', 256),
                                         params.get('ffn_dim_multiplier')),
        num_hidden_layers=params['n_layers'],
        num_attention_heads=params['n_heads'],
        num_key_value_heads=params.get('n_kv_heads') or params['n_heads'],
        rms_norm_eps=params.get('norm_eps', 1e-6),
        rope_theta=params.get('rope_theta', 10000.0),
        vocab_size=vocab,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
        hidden_act='silu',
        attention_bias=False,
        mlp_bias=False)
    if params.get('use_scaled_rope'):
        # LLaMA-3.1: Meta's apply_scaling of the RoPE frequencies, which
        # transformers implements as rope_type 'llama3' (same constants)
        cfg['rope_scaling'] = dict(
            rope_type='llama3',
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192)
    cfg.update(overrides)
    return LlamaConfig(**cfg)


#: Model-parallel split dimension of each Meta LLaMA tensor in
#: ``consolidated.NN.pth`` shards (fairscale layers of Meta's code):
#: column-parallel linears (``wq``, ``wk``, ``wv``, ``w1``, ``w3``,
#: ``output``) split their output rows (dim 0), row-parallel ones (``wo``,
#: ``w2``) their input columns (dim 1); the token embedding is split along
#: the embedding width (dim 1, LLaMA-1/2) or the vocabulary (dim 0,
#: LLaMA-3); norms and ``rope.freqs`` are replicated (None).
META_SHARD_DIMS = {
    'attention.wq.weight': 0,
    'attention.wk.weight': 0,
    'attention.wv.weight': 0,
    'attention.wo.weight': 1,
    'feed_forward.w1.weight': 0,
    'feed_forward.w2.weight': 1,
    'feed_forward.w3.weight': 0,
    'output.weight': 0,
    'tok_embeddings.weight': 'embedding',
}


def _meta_shard_dim(key: str, shards: list, dim: int) -> Optional[int]:
    """Concatenation dim of ``key`` over ``shards`` (None: replicated)."""
    m = _META_LAYER.match(key)
    leaf = key if m is None else m.group(2)
    split = META_SHARD_DIMS.get(leaf)
    if split == 'embedding':
        # width-split (LLaMA-1/2) shards are dim / n wide; vocab-split
        # (LLaMA-3) shards keep the full width
        return 0 if shards[0][key].shape[1] == dim else 1
    return split


def merge_meta_shards(shards: list, dim: int) -> Dict[str, torch.Tensor]:
    """Merge Meta's model-parallel shards into one state dict.

    Args:
        shards (list[dict]): The state dicts of ``consolidated.00.pth``,
            ``consolidated.01.pth``, ... in order.
        dim (int): The model width (``params.json`` ``dim``).

    Returns:
        dict: The state dict of the unsharded model (Meta names).

    Raises:
        ValueError: The shards hold different keys, or replicated tensors
            differ between shards.
    """
    if len(shards) == 1:
        return dict(shards[0])
    keys = list(shards[0])
    for i, sd in enumerate(shards[1:], 1):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))[:5]
            raise ValueError(f'shard {i} holds other keys than shard 0 '
                             f'(e.g. {diff})')
    out = {}
    for key in keys:
        split = _meta_shard_dim(key, shards, dim)
        parts = [sd[key] for sd in shards]
        if split is None:
            if any(not torch.equal(p, parts[0]) for p in parts[1:]):
                raise ValueError(f'{key} is replicated in model-parallel '
                                 'shards but differs between them')
            out[key] = parts[0]
        else:
            out[key] = torch.cat(parts, dim=split)
    return out


def _load_meta_file(path: str) -> Dict[str, torch.Tensor]:
    try:
        return torch.load(
            path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:
        # Legacy (non-zip) files cannot be memory-mapped, and a refused or
        # damaged pickle must surface as UnsafeCheckpointError /
        # CheckpointLoadError naming the file, not torch's raw error:
        # load_tensors reads it again through the safe loader.
        return load_tensors(path)


def load_meta_llama_state_dict(path: Union[str, Sequence[str]],
                               config) -> Dict[str, torch.Tensor]:
    """Read Meta's consolidated checkpoint into transformers names/layout.

    Args:
        path (str | Sequence[str]): ``consolidated.00.pth`` (one shard,
            7B / 8B), or all ``consolidated.NN.pth`` model-parallel shards
            in order (13B: 2, 70B: 8), merged with
            :func:`merge_meta_shards`.
        config (transformers.LlamaConfig): Target config; every tensor shape
            is checked against it.

    Returns:
        dict: ``LlamaForCausalLM`` state dict.
    """
    paths = [path] if isinstance(path, str) else list(path)
    shards = [_load_meta_file(p) for p in paths]  # refuses unsafe files
    d = config.hidden_size
    try:
        sd = merge_meta_shards(shards, d)
    except (ValueError, KeyError, IndexError) as e:
        raise ValueError(f'{paths}: cannot merge the model-parallel shards '
                         f'({e})') from e
    path = paths[0] if len(paths) == 1 else f'{paths[0]} (+{len(paths) - 1})'
    n_heads = config.num_attention_heads
    n_kv = config.num_key_value_heads
    tok = sd.get('tok_embeddings.weight')
    if tok is None:
        raise ValueError(f'{path}: no tok_embeddings.weight; not a Meta '
                         'LLaMA consolidated checkpoint')
    if tuple(tok.shape) != (config.vocab_size, d):
        raise ValueError(
            f'{path}: tok_embeddings.weight has shape {tuple(tok.shape)} but '
            f'params.json/tokenizer give (vocab={config.vocab_size}, '
            f'dim={d}); wrong LLaMA size or tokenizer?')
    out = {}
    for key, value in sd.items():
        if key == 'rope.freqs':
            continue
        hf = official_to_hf_key(key)
        if hf is None:
            raise ValueError(f'{path}: unexpected key {key!r}')
        kind = needs_row_permutation(key)
        if kind is not None:
            value = meta_to_hf_rows(value, n_heads if kind == 'q' else n_kv)
        out[hf] = value
    return out


def load_mmpretrain_clip(vit: torch.nn.Module, proj: torch.nn.Linear,
                         path: str) -> None:
    """Load an mmpretrain CLIP checkpoint into a ViT and its projection.

    Accepts backbone keys prefixed ``backbone.``, ``visual.`` or
    ``vision_backbone.`` and the projection as ``visual_proj.proj`` or
    ``projection.proj`` (both (in, out), i.e. the transposed Linear weight).
    """
    ckpt = load_tensors(path)
    state = ckpt.get('state_dict', ckpt)
    backbone, proj_w = {}, None
    for k, v in state.items():
        if k in ('visual_proj.proj', 'projection.proj', 'visual.proj'):
            proj_w = v
            continue
        for prefix in ('backbone.', 'vision_backbone.', 'visual.'):
            if k.startswith(prefix):
                backbone[k[len(prefix):]] = v
                break
    if proj_w is None:
        raise ValueError(
            f'{path}: no CLIP projection (visual_proj.proj / '
            'projection.proj); LLaMA-Adapter V2 needs the 1024 -> 768 '
            'projection of CLIP (docs/llama_adapter_v2.md#visual-path)')
    if tuple(proj_w.shape) != (proj.in_features, proj.out_features):
        raise ValueError(f'{path}: CLIP projection has shape '
                         f'{tuple(proj_w.shape)}, expected '
                         f'{(proj.in_features, proj.out_features)}')
    missing, unexpected = vit.load_state_dict(backbone, strict=False)
    if missing:
        raise ValueError(f'{path}: CLIP backbone keys missing: {missing[:5]}')
    with torch.no_grad():
        proj.weight.copy_(proj_w.t())


def expected_adapter_shapes(dim: int = 4096,
                            n_layers: int = 32,
                            n_heads: int = 32,
                            ffn_hidden: int = 11008,
                            clip_dim: int = 768,
                            v_embed_dim: int = 768,
                            v_depth: int = 8,
                            v_mlp_ratio: float = 4.0,
                            query_len: int = 10,
                            query_layer: int = 31,
                            w_bias: bool = True,
                            w_lora: bool = False,
                            lora_rank: int = 16) -> Dict[str, tuple]:
    """Official key -> shape of a released multimodal adapter file (see
    docs/llama_adapter_v2.md#released-adapter-files); the defaults are LLaMA-7B
    with CLIP ViT-L/14."""
    hidden = int(v_embed_dim * v_mlp_ratio)
    shapes = {
        'clip_proj.weight': (v_embed_dim, clip_dim),
        'clip_proj.bias': (v_embed_dim, ),
        'clip_proj_norm.weight': (v_embed_dim, ),
        'clip_proj_norm.bias': (v_embed_dim, ),
        'visual_query.weight': (query_len, v_embed_dim),
        'visual_proj.weight': (dim, v_embed_dim),
        'visual_proj.bias': (dim, ),
        'visual_proj_norm.weight': (dim, ),
        'visual_proj_norm.bias': (dim, ),
        'adapter_query.weight': (query_len * query_layer, dim),
        'llama.norm.weight': (dim, ),
    }
    for i in range(v_depth):
        p = f'visual_blocks.{i}.'
        for n in ('norm1', 'norm2'):
            shapes[p + n + '.weight'] = (v_embed_dim, )
            shapes[p + n + '.bias'] = (v_embed_dim, )
        shapes[p + 'attn.qkv.weight'] = (3 * v_embed_dim, v_embed_dim)
        shapes[p + 'attn.qkv.bias'] = (3 * v_embed_dim, )
        shapes[p + 'attn.proj.weight'] = (v_embed_dim, v_embed_dim)
        shapes[p + 'attn.proj.bias'] = (v_embed_dim, )
        shapes[p + 'mlp.fc1.weight'] = (hidden, v_embed_dim)
        shapes[p + 'mlp.fc1.bias'] = (hidden, )
        shapes[p + 'mlp.fc2.weight'] = (v_embed_dim, hidden)
        shapes[p + 'mlp.fc2.bias'] = (v_embed_dim, )
    io = dict(
        wq=(dim, dim),
        wk=(dim, dim),
        wv=(dim, dim),
        wo=(dim, dim),
        w1=(ffn_hidden, dim),
        w2=(dim, ffn_hidden),
        w3=(ffn_hidden, dim))
    for i in range(n_layers):
        p = f'llama.layers.{i}.'
        shapes[p + 'attention.gate'] = (1, n_heads, 1, 1)
        shapes[p + 'attention_norm.weight'] = (dim, )
        shapes[p + 'ffn_norm.weight'] = (dim, )
        if w_bias:
            for n in ('wq', 'wo'):
                shapes[f'{p}attention.{n}.bias'] = (dim, )
            for n in ('w1', 'w2', 'w3'):
                shapes[f'{p}feed_forward.{n}.bias'] = (io[n][0], )
        if w_lora:
            shapes[p + 'attention.new_gate'] = (1, 1, 1, 1)
            for n, (out, inp) in io.items():
                mod = 'attention' if n in ('wq', 'wk', 'wv',
                                           'wo') else 'feed_forward'
                shapes[f'{p}{mod}.lora_{n}_l1.weight'] = (lora_rank, inp)
                shapes[f'{p}{mod}.lora_{n}_l2.weight'] = (out, lora_rank)
    return shapes


def check_adapter_state(state: Dict[str, torch.Tensor],
                        expected: Dict[str, tuple],
                        source: str = 'checkpoint') -> None:
    """Raise a ``ValueError`` naming ``source``, the key and the shapes when
    ``state`` does not match ``expected`` (see
    :func:`expected_adapter_shapes`)."""
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f'{source}: missing {key} (expected shape '
                             f'{shape})')
        got = tuple(state[key].shape)
        if got != tuple(shape):
            hint = ''
            if key == 'clip_proj.weight' and got[1] != shape[1]:
                hint = (f'; {got[1]}-d CLIP features, expected {shape[1]} '
                        '(LLaMA-Adapter V2 files need CLIP ViT-L/14)')
            elif key.startswith(('llama.', 'adapter_query', 'visual_proj')):
                hint = '; made for another LLaMA size'
            raise ValueError(f'{source}: {key} has shape {got}, expected '
                             f'{tuple(shape)}{hint}')
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f'{source}: unexpected keys {extra[:8]}')

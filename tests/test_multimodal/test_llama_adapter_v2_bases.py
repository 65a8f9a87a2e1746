"""LLaMA-Adapter V2 on current LLM bases, at tiny size: LLaMA-2 and a
grouped-query-attention LLaMA-3 layout through transformers directories,
and Meta's multi-shard (13B-style) checkpoints through the loader."""
import copy
import json

import pytest
import torch
from llama_adapter_helpers import TINY_BRIDGE, TINY_CLIP, VOCAB, build_tiny

# transformers LlamaConfig arguments of the tiny bases (the layouts of the
# real ones: LLaMA-2 has one KV head per query head, eps 1e-5 and a 4k
# context; LLaMA-3 has 4x fewer KV heads (grouped-query attention) and
# RoPE theta 5e5)
BASES = {
    'llama2':
    dict(
        num_key_value_heads=4,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        rope_theta=10000.0),
    'llama3-gqa':
    dict(
        num_key_value_heads=1,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        rope_theta=500000.0),
}
DIM, LAYERS, HEADS, FFN = 64, 3, 4, 176


def _write_hf_base(path, name, seed=0, vocab=VOCAB):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=DIM,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        # a wider init than 0.02, so that logits are not flat
        initializer_range=0.3,
        tie_word_embeddings=False,
        **BASES[name])
    LlamaForCausalLM(config).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope='module', params=sorted(BASES))
def base(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, _write_hf_base(path, request.param)


def _inputs(seed=0, b=2, t=9):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, 32, 32, generator=g),
            torch.randint(3, VOCAB, (b, t), generator=g))


def test_adapter_at_init_reproduces_the_base(base):
    from transformers import LlamaForCausalLM
    name, path = base
    model = build_tiny(llm=dict(name_or_path=path)).eval()
    config = model.llama.config
    assert config.num_key_value_heads == BASES[name]['num_key_value_heads']
    attn = model.llama.model.layers[0].self_attn
    kv_dim = DIM // HEADS * config.num_key_value_heads
    assert attn.k_proj.weight.shape == (kv_dim, DIM)
    plain = LlamaForCausalLM.from_pretrained(path).eval()
    images, tokens = _inputs()
    with torch.no_grad():
        ref = plain(tokens).logits
        ours = model.forward_llm(tokens, model.forward_visual(images))
    assert ref.abs().max() > 0.1  # not a flat random model
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith('self_attn.gate'):
                p.fill_(1.0)
        opened = model.forward_llm(tokens, model.forward_visual(images))
    assert (opened - ref).abs().max() > 1e-3


def test_trainable_counts_follow_the_phases(base):
    name, path = base
    kv_dim = DIM // HEADS * BASES[name]['num_key_value_heads']
    q, e = TINY_BRIDGE['query_len'], TINY_BRIDGE['query_layer']
    norms = LAYERS * 2 * DIM + DIM
    # mm7b biases: q, o, down (DIM wide) and gate, up (FFN wide); not k, v
    biases = LAYERS * (3 * DIM + 2 * FFN)
    model = build_tiny(llm=dict(name_or_path=path), phase='finetune')
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == norms + biases
    c65b = build_tiny(
        llm=dict(name_or_path=path), phase='finetune', bias_mode='c65b')
    # all seven linears get a bias and an input scale; k / v biases are
    # kv_dim wide (the grouped heads), their scales DIM (the input)
    ins = LAYERS * (6 * DIM + FFN)
    outs = LAYERS * (2 * DIM + 2 * kv_dim + 2 * FFN + DIM)
    assert sum(p.numel() for p in c65b.parameters()
               if p.requires_grad) == norms + outs + ins
    model.set_phase('pretrain')
    v = TINY_BRIDGE['v_embed_dim']
    block = 4 * v * v + 4 * v + 2 * 2 * v + 2 * v * 4 * v + 4 * v + v
    bridge = (
        TINY_CLIP['projection_dim'] * v + v + 2 * v + q * v +
        TINY_BRIDGE['v_depth'] * block + v * DIM + DIM + 2 * DIM)
    gates = LAYERS * HEADS
    assert sum(p.numel() for p in model.parameters()
               if p.requires_grad) == bridge + gates + q * e * DIM
    model.set_phase('frozen')
    assert not any(p.requires_grad for p in model.parameters())


def test_generation_with_kv_cache(base, skimage_data, tmp_path):
    """Greedy decoding with the cache = recomputing the whole sequence, on
    the base with grouped KV heads."""
    from visionllama_mm.multimodal.llama_adapter_v2.llm import build_tokenizer
    name, _ = base
    path = _write_hf_base(tmp_path / name, name, vocab=skimage_data['vocab'])
    model = build_tiny(
        llm=dict(name_or_path=path),
        tokenizer=dict(
            type='LlamaTokenizer', name_or_path=skimage_data['tokenizer']),
        max_words=128).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith('self_attn.gate'):
                p.fill_(0.5)
    images, _ = _inputs(3, b=1)
    prompt = 'Describe the image.'
    texts = model.generate(images, [prompt], max_new_tokens=6, temperature=0.0)
    tok = model.tokenizer
    ids = tok.encode(prompt)
    visual = model.forward_visual(images)
    out = []
    with torch.no_grad():
        for _ in range(6):
            logits = model.forward_llm(torch.tensor([ids + out]), visual)
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_id:
                break
            out.append(nxt)
    assert texts == [tok.decode(out).strip()]
    assert build_tokenizer(None) is None


# ----------------------------------------------------------------------
# Meta multi-shard checkpoints
# ----------------------------------------------------------------------
def _meta_state(n_kv_heads, seed=0):
    """A tiny Meta-layout LLaMA state dict and its params.json."""
    from transformers import LlamaForCausalLM

    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import (
        hf_to_meta_rows, hf_to_official_key, meta_params_to_hf_config,
        needs_row_permutation)
    params = dict(
        dim=DIM,
        n_layers=LAYERS,
        n_heads=HEADS,
        n_kv_heads=n_kv_heads,
        multiple_of=16,
        norm_eps=1e-5,
        vocab_size=VOCAB)
    config = meta_params_to_hf_config(params, VOCAB, initializer_range=0.3)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(config)
    state = {}
    for key, value in llama.state_dict().items():
        meta = hf_to_official_key(key)
        kind = needs_row_permutation(meta)
        if kind is not None:
            value = hf_to_meta_rows(value,
                                    HEADS if kind == 'q' else n_kv_heads)
        state[meta] = value.clone()
    state['rope.freqs'] = torch.ones(DIM // HEADS // 2)
    return state, params


def _split(state, n, vocab_split=False):
    """Meta's model-parallel split into ``n`` shards (fairscale layouts)."""
    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import \
        META_SHARD_DIMS
    shards = [{} for _ in range(n)]
    for key, value in state.items():
        leaf = key.split('.', 2)[-1] if key.startswith('layers.') else key
        dim = META_SHARD_DIMS.get(leaf)
        if dim == 'embedding':
            dim = 0 if vocab_split else 1
        for i in range(n):
            shards[i][key] = value.clone() if dim is None else \
                value.chunk(n, dim=dim)[i].clone()
    return shards


def _write_meta(path, shards, params):
    path.mkdir()
    for i, sd in enumerate(shards):
        torch.save(sd, path / f'consolidated.{i:02d}.pth')
    with open(path / 'params.json', 'w') as f:
        json.dump(params, f)
    return str(path)


@pytest.mark.parametrize('n_kv_heads', [HEADS, 2])
def test_meta_multi_shard_checkpoint_loads(tmp_path, n_kv_heads):
    """13B-style 2-shard files (column-parallel q/k/v/w1/w3/output split on
    rows, row-parallel wo/w2 and the embedding on columns) give the same
    model as the single file; a GQA layout splits its KV heads."""
    from visionllama_mm.multimodal.llama_adapter_v2.llm import build_llama
    state, params = _meta_state(n_kv_heads)
    one = _write_meta(tmp_path / 'one', [state], params)
    two = _write_meta(tmp_path / 'two', _split(state, 2), params)
    shards = _split(state, 2)
    assert shards[0]['layers.0.attention.wq.weight'].shape == (DIM // 2, DIM)
    assert shards[0]['layers.0.attention.wo.weight'].shape == (DIM, DIM // 2)
    assert shards[0]['tok_embeddings.weight'].shape == (VOCAB, DIM // 2)
    a, b = build_llama(dict(meta_dir=one)), build_llama(dict(meta_dir=two))
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=0, rtol=0)
    # and the adapter on the sharded base reproduces the plain base at init
    model = build_tiny(llm=dict(meta_dir=two)).eval()
    images, tokens = _inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_llm(tokens, model.forward_visual(images)),
            a.eval()(tokens).logits,
            atol=1e-5,
            rtol=1e-5)
    # LLaMA-3 splits the embedding over the vocabulary: merged the same way
    vocab = _write_meta(tmp_path / 'vocab', _split(state, 2, True), params)
    c = build_llama(dict(meta_dir=vocab))
    torch.testing.assert_close(c.model.embed_tokens.weight,
                               a.model.embed_tokens.weight)


def test_meta_shards_that_disagree_fail_clearly(tmp_path):
    from visionllama_mm.multimodal.llama_adapter_v2.llm import build_llama
    state, params = _meta_state(HEADS)
    shards = _split(state, 2)
    bad = copy.deepcopy(shards)
    bad[1]['norm.weight'] += 1
    path = _write_meta(tmp_path / 'bad', bad, params)
    with pytest.raises(ValueError, match='norm.weight is replicated'):
        build_llama(dict(meta_dir=path))
    gap = _write_meta(tmp_path / 'gap', shards, params)
    import os
    os.rename(f'{gap}/consolidated.01.pth', f'{gap}/consolidated.02.pth')
    with pytest.raises(ValueError, match='numbered'):
        build_llama(dict(meta_dir=gap))
    missing = copy.deepcopy(shards)
    del missing[1]['layers.0.attention.wq.weight']
    path = _write_meta(tmp_path / 'missing', missing, params)
    with pytest.raises(ValueError, match='other keys'):
        build_llama(dict(meta_dir=path))

"""LLaMA-Adapter V2: numerics against the docs, phases, checkpoints,
generation (tiny random models, CPU)."""
import copy
import json
import math
import os.path as osp
import re

import pytest
import torch
from llama_adapter_helpers import (TINY_BRIDGE, TINY_CLIP, TINY_LLAMA, VOCAB,
                                   build_tiny, randomize_adapters)
from llama_adapter_reference import (hf_rows_to_meta, llama_adapter_logits,
                                     meta_base_from_hf, visual_query)

VARIANTS = {
    'default': dict(),
    'lora': dict(w_lora=True, lora_rank=4),
    'early': dict(fusion='early'),
    'c65b': dict(bias_mode='c65b'),
    'paper': dict(bias_mode='paper', fusion='early'),
    'manual_attn': dict(fused_attn=False, w_lora=True, lora_rank=3),
}


def _inputs(seed=0, b=2, t=7):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, 32, 32, generator=g)
    tokens = torch.randint(3, VOCAB, (b, t), generator=g)
    return images, tokens


def _clip_features(model, images):
    """All-token CLIP features per docs/llama_adapter_v2.md#visual-path
    (post-LN on every token)."""
    clip = model.clip.backbone
    hidden = clip.vision_model(pixel_values=images).last_hidden_state
    return clip.vision_model.post_layernorm(
        hidden) @ clip.visual_projection.weight.t()


def _reference(model, images, tokens, sd=None, **kw):
    cfg = dict(
        n_layers=TINY_LLAMA['n_layers'],
        n_heads=TINY_LLAMA['n_heads'],
        query_len=TINY_BRIDGE['query_len'],
        query_layer=TINY_BRIDGE['query_layer'],
        fusion=model.fusion,
        bias_mode=model.bias_mode)
    cfg.update(kw)
    if sd is None:
        sd = dict(meta_base_from_hf(model.llama, cfg['n_heads']))
        sd.update(model.state_dict())
    visual = visual_query(
        _clip_features(model, images), sd, cfg['query_len'],
        TINY_BRIDGE['v_num_heads'])
    return llama_adapter_logits(tokens, visual, sd, **cfg)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_logits_match_spec_reference(variant):
    model = randomize_adapters(build_tiny(**VARIANTS[variant])).eval()
    images, tokens = _inputs()
    with torch.no_grad():
        ours = model.forward_llm(tokens, model.forward_visual(images))
        ref = _reference(model, images, tokens)
    assert ours.shape == (2, 7, VOCAB)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the comparison is discriminating: closing the gates moves the logits
    # by orders of magnitude more than the tolerance
    sd = dict(meta_base_from_hf(model.llama, TINY_LLAMA['n_heads']))
    sd.update({
        k: (torch.zeros_like(v) if k.endswith('attention.gate') else v)
        for k, v in model.state_dict().items()
    })
    with torch.no_grad():
        closed = _reference(model, images, tokens, sd=sd)
    assert (closed - ref).abs().max() > 1e-2


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_zero_gates_give_plain_llama(variant):
    from transformers import LlamaForCausalLM
    model = build_tiny(**VARIANTS[variant]).eval()
    plain = LlamaForCausalLM(model.llama.config).eval()
    own = model.llama.state_dict()
    plain.load_state_dict({k: own[k] for k in plain.state_dict()})
    images, tokens = _inputs(1)
    with torch.no_grad():
        ours = model.forward_llm(tokens, model.forward_visual(images))
        ref = plain(tokens).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # and the prompts do matter once the gates open
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('self_attn.gate'):
                p.fill_(1.0)
        opened = model.forward_llm(tokens, model.forward_visual(images))
    assert (opened - ref).abs().max() > 1e-4


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_adapter_rms_norm_is_transformers_rms_norm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from visionllama_mm.multimodal.llama_adapter_v2.adapter_layers import (
        AdapterRMSNorm, GradientStop)
    ref = LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
    norm = AdapterRMSNorm.from_norm(ref)
    assert norm.weight is ref.weight
    x = torch.randn(2, 3, 16, dtype=dtype)
    torch.testing.assert_close(norm(x), ref(x), atol=0, rtol=0)
    stop = GradientStop()
    stop.enabled = True
    norm.attach_gradient_stop(stop, {'weight': 'language'})
    with stop.stopping(['language']):
        y = norm(x.requires_grad_())
    torch.testing.assert_close(y, ref(x), atol=0, rtol=0)
    y.sum().backward()
    assert ref.weight.grad is None and x.grad is not None


def test_visual_query_shape_and_clip_tokens():
    model = build_tiny()
    images, _ = _inputs(b=3)
    feats = model.clip(images)
    n_tokens = (TINY_CLIP['image_size'] // TINY_CLIP['patch_size'])**2 + 1
    assert feats.shape == (3, n_tokens, TINY_CLIP['projection_dim'])
    torch.testing.assert_close(feats, _clip_features(model, images))
    visual = model.forward_visual(images)
    assert visual.shape == (3, TINY_BRIDGE['query_len'], TINY_LLAMA['dim'])


def test_bad_options_raise():
    with pytest.raises(ValueError, match='fusion'):
        build_tiny(fusion='middle')
    with pytest.raises(ValueError, match='bias_mode'):
        build_tiny(bias_mode='all')
    with pytest.raises(ValueError, match='phase'):
        build_tiny(phase='warmup')
    with pytest.raises(ValueError, match='query_layer'):
        build_tiny(query_layer=TINY_LLAMA['n_layers'] + 1)
    with pytest.raises(ValueError, match='early'):
        build_tiny(fusion='early', query_layer=TINY_LLAMA['n_layers'])
    with pytest.raises(ValueError, match='generation_cfg'):
        build_tiny(generation_cfg=dict(beams=3))


# ----------------------------------------------------------------------
# phases and parameter counts
# ----------------------------------------------------------------------
def _meta_7b(**kwargs):
    """LLaMA-7B with CLIP ViT-L/14 (tokenizer of 32000 words), on meta."""
    from visionllama_mm.multimodal import LLaMAAdapterV2
    from visionllama_mm.multimodal.llama_adapter_v2.llm import LLAMA_7B_PARAMS
    from visionllama_mm.multimodal.llama_adapter_v2.visual import \
        CLIP_VIT_L14_CONFIG
    with torch.device('meta'):
        return LLaMAAdapterV2(
            llm=dict(params=dict(LLAMA_7B_PARAMS, vocab_size=32000)),
            vision_encoder=dict(type='hf', config=CLIP_VIT_L14_CONFIG),
            **kwargs)


def _n_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_7b_trainable_counts_on_meta_device():
    model = _meta_7b(phase='pretrain')
    assert sum(p.numel()
               for p in model.llama.parameters()) - 32 * 34304 - 32 * 32 \
        == 6738415616
    assert _n_trainable(model) == 61731584
    model.set_phase('finetune')
    assert _n_trainable(model) == 1363968
    model.set_phase('frozen')
    assert _n_trainable(model) == 0
    # the saved adapter = both groups = the released BIAS-7B content
    state = model.state_dict()
    assert sum(v.numel() for v in state.values()) == 63095552
    assert not any(k.startswith('clip.') for k in state)
    assert 'llama.layers.0.attention.wq.bias' in state
    assert 'llama.layers.0.attention.wq.weight' not in state
    assert 'llama.tok_embeddings.weight' not in state


def test_7b_lora_and_c65b_counts_on_meta_device():
    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import \
        expected_adapter_shapes
    model = _meta_7b(phase='finetune', w_lora=True, lora_rank=16)
    assert _n_trainable(model) == 1363968 + 39976960
    # 'new_gate' matches 'gate'
    # (docs/llama_adapter_v2.md#phases-and-trainable-groups)
    model.set_phase('pretrain')
    assert _n_trainable(model) == 61731584 + 32
    expected = expected_adapter_shapes(w_lora=True)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(math.prod(s) for s in expected.values()) == \
        63095552 + 39976960 + 32
    c65b = _meta_7b(phase='finetune', bias_mode='c65b')
    assert _n_trainable(c65b) == 2764800  # the paper's "0.04%" on 7B


def test_joint_phase_is_the_union_of_disjoint_sides():
    model = build_tiny(phase='joint', fusion='early')
    sides = {
        n: model.param_side(n)
        for n, p in model.named_parameters() if p.requires_grad
    }
    pre = build_tiny(phase='pretrain')
    fine = build_tiny(phase='finetune')
    union = {n
             for n, p in pre.named_parameters() if p.requires_grad
             } | {n
                  for n, p in fine.named_parameters() if p.requires_grad}
    assert set(sides) == union
    assert sides['clip_proj.weight'] == 'visual'
    assert sides['llama.model.layers.0.self_attn.gate'] == 'visual'
    assert sides['llama.model.layers.2.self_attn.gate'] == 'language'
    assert sides['adapter_query.weight'] == 'language'
    assert sides['llama.model.norm.weight'] == 'language'


# ----------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------
def test_state_dict_official_names_and_roundtrip():
    src = randomize_adapters(
        build_tiny(w_lora=True, lora_rank=4), seed=3, base_gain=1.0)
    state = src.state_dict()
    assert all(not k.startswith(('clip.', 'llama.model', 'llama.lm_head'))
               for k in state)
    assert 'llama.layers.1.attention.lora_wq_l2.weight' in state
    assert 'llama.layers.1.feed_forward.lora_w2_l1.weight' in state
    assert 'llama.layers.1.attention.new_gate' in state
    # q bias is stored in Meta's row order
    ours = src.llama.model.layers[1].self_attn.q_proj.bias
    torch.testing.assert_close(
        state['llama.layers.1.attention.wq.bias'],
        hf_rows_to_meta(ours[:, None], TINY_LLAMA['n_heads'])[:, 0])
    dst = build_tiny(w_lora=True, lora_rank=4, seed=0)
    result = dst.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    images, tokens = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            dst.forward_llm(tokens, dst.forward_visual(images)),
            src.forward_llm(tokens, src.forward_visual(images)))


def _official_file_state(w_lora, seed=5):
    """Official keys and shapes
    (docs/llama_adapter_v2.md#released-adapter-files) at the tiny size,
    random."""
    g = torch.Generator().manual_seed(seed)
    dim, layers = TINY_LLAMA['dim'], TINY_LLAMA['n_layers']
    hidden = 176  # ceil16(int(2 * 4 * 64 / 3)) = 176
    v, clip = TINY_BRIDGE['v_embed_dim'], TINY_CLIP['projection_dim']
    ql, qn = TINY_BRIDGE['query_len'], TINY_BRIDGE['query_layer']
    shapes = {
        'clip_proj.weight': (v, clip),
        'clip_proj.bias': (v, ),
        'clip_proj_norm.weight': (v, ),
        'clip_proj_norm.bias': (v, ),
        'visual_query.weight': (ql, v),
        'visual_proj.weight': (dim, v),
        'visual_proj.bias': (dim, ),
        'visual_proj_norm.weight': (dim, ),
        'visual_proj_norm.bias': (dim, ),
        'adapter_query.weight': (ql * qn, dim),
        'llama.norm.weight': (dim, ),
    }
    for i in range(TINY_BRIDGE['v_depth']):
        p = f'visual_blocks.{i}.'
        shapes.update({
            p + 'norm1.weight': (v, ),
            p + 'norm1.bias': (v, ),
            p + 'attn.qkv.weight': (3 * v, v),
            p + 'attn.qkv.bias': (3 * v, ),
            p + 'attn.proj.weight': (v, v),
            p + 'attn.proj.bias': (v, ),
            p + 'norm2.weight': (v, ),
            p + 'norm2.bias': (v, ),
            p + 'mlp.fc1.weight': (4 * v, v),
            p + 'mlp.fc1.bias': (4 * v, ),
            p + 'mlp.fc2.weight': (v, 4 * v),
            p + 'mlp.fc2.bias': (v, ),
        })
    for i in range(layers):
        p = f'llama.layers.{i}.'
        shapes.update({
            p + 'attention.gate': (1, TINY_LLAMA['n_heads'], 1, 1),
            p + 'attention.wq.bias': (dim, ),
            p + 'attention.wo.bias': (dim, ),
            p + 'feed_forward.w1.bias': (hidden, ),
            p + 'feed_forward.w2.bias': (dim, ),
            p + 'feed_forward.w3.bias': (hidden, ),
            p + 'attention_norm.weight': (dim, ),
            p + 'ffn_norm.weight': (dim, ),
        })
        if w_lora:
            r = 4
            shapes[p + 'attention.new_gate'] = (1, 1, 1, 1)
            for n in 'qkvo':
                shapes[f'{p}attention.lora_w{n}_l1.weight'] = (r, dim)
                shapes[f'{p}attention.lora_w{n}_l2.weight'] = (dim, r)
            shapes[p + 'feed_forward.lora_w1_l1.weight'] = (r, dim)
            shapes[p + 'feed_forward.lora_w1_l2.weight'] = (hidden, r)
            shapes[p + 'feed_forward.lora_w2_l1.weight'] = (r, hidden)
            shapes[p + 'feed_forward.lora_w2_l2.weight'] = (dim, r)
            shapes[p + 'feed_forward.lora_w3_l1.weight'] = (r, dim)
            shapes[p + 'feed_forward.lora_w3_l2.weight'] = (hidden, r)
    return {k: 0.2 * torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.mark.parametrize('w_lora', [False, True])
def test_released_adapter_file_loads_and_matches_reference(tmp_path, w_lora):
    state = _official_file_state(w_lora)
    path = str(tmp_path / 'BIAS-7B.pth')
    torch.save(
        dict(
            model=state, config=dict(w_bias=True, w_lora=w_lora, lora_rank=4)),
        path)
    kwargs = dict(w_lora=True, lora_rank=4) if w_lora else {}
    model = build_tiny(**kwargs).eval()
    model.load_adapter(path)
    sd = dict(meta_base_from_hf(model.llama, TINY_LLAMA['n_heads']))
    sd.update(state)
    images, tokens = _inputs(2)
    with torch.no_grad():
        ours = model.forward_llm(tokens, model.forward_visual(images))
        ref = _reference(model, images, tokens, sd=sd)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the same file through mmengine's loader (the raw released layout)
    other = build_tiny(**kwargs).eval()  # same frozen base, fresh adapters
    from mmengine.runner import load_checkpoint
    load_checkpoint(other, path, map_location='cpu', strict=True)
    with torch.no_grad():
        torch.testing.assert_close(
            other.forward_llm(tokens, other.forward_visual(images)), ours)


def test_converter_and_mmengine_load(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'conv',
        osp.join(
            osp.dirname(__file__), '..', '..', 'tools', 'model_converters',
            'llama_adapter_v2_adapter.py'))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    state = _official_file_state(False)
    src = str(tmp_path / 'CAPTION-7B.pth')
    torch.save(dict(model=state, config=dict(w_bias=True, w_lora=False)), src)
    dst = str(tmp_path / 'converted.pth')
    tiny = dict(
        n_heads=TINY_LLAMA['n_heads'],
        multiple_of=16,
        clip_dim=TINY_CLIP['projection_dim'],
        v_embed_dim=TINY_BRIDGE['v_embed_dim'],
        v_depth=TINY_BRIDGE['v_depth'],
        query_len=TINY_BRIDGE['query_len'],
        query_layer=TINY_BRIDGE['query_layer'])
    conv.convert(
        src,
        dst,
        dim=TINY_LLAMA['dim'],
        n_layers=TINY_LLAMA['n_layers'],
        **tiny)
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert ckpt['meta']['adapter_config']['w_lora'] is False
    from mmengine.runner import load_checkpoint
    model = build_tiny()
    load_checkpoint(model, dst, map_location='cpu', strict=True)
    torch.testing.assert_close(model.state_dict()['adapter_query.weight'],
                               state['adapter_query.weight'])
    # a wrong-size file fails with the file name and the shape
    with pytest.raises(
            ValueError, match=r'CAPTION-7B\.pth.*\(64, 16\).*LLaMA size'):
        conv.convert(src, dst, dim=128, n_layers=3, **tiny)


def test_mismatched_adapter_files_fail_clearly(tmp_path):
    model = build_tiny()
    state = _official_file_state(False)
    bad_clip = dict(state)
    bad_clip['clip_proj.weight'] = torch.zeros(TINY_BRIDGE['v_embed_dim'], 12)
    path = str(tmp_path / 'vitb.pth')
    torch.save(dict(model=bad_clip, config=dict(w_bias=True)), path)
    with pytest.raises(ValueError, match=r'vitb\.pth.*clip_proj.*CLIP'):
        model.load_adapter(path)
    bad_llama = dict(state)
    bad_llama['adapter_query.weight'] = torch.zeros(8, 128)
    path = str(tmp_path / 'llama13b.pth')
    torch.save(dict(model=bad_llama, config={}), path)
    with pytest.raises(
            ValueError,
            match=r'llama13b\.pth.*adapter_query.*'
            r'\(8, 128\).*LLaMA size'):
        model.load_adapter(path)
    deep = dict(state)
    deep['llama.layers.7.attention.gate'] = torch.zeros(1, 4, 1, 1)
    path = str(tmp_path / 'deep.pth')
    torch.save(dict(model=deep), path)
    with pytest.raises(ValueError, match=r'deep\.pth.*layer 7.*3 layers'):
        model.load_adapter(path)
    path = str(tmp_path / 'lora.pth')
    torch.save(
        dict(
            model=_official_file_state(True),
            config=dict(w_lora=True, lora_rank=4)), path)
    with pytest.raises(ValueError, match=r'lora\.pth.*w_lora'):
        model.load_adapter(path)


def test_missing_or_mismatched_llama_files(tmp_path):
    from visionllama_mm.multimodal.llama_adapter_v2 import llm as llm_lib
    with pytest.raises(FileNotFoundError, match='nowhere/tokenizer.model'):
        llm_lib.build_tokenizer(dict(name_or_path='nowhere/tokenizer.model'))
    with pytest.raises(FileNotFoundError, match='params.json'):
        llm_lib.build_llama(dict(meta_dir=str(tmp_path)), 32000)
    with pytest.raises(FileNotFoundError, match='config.json'):
        llm_lib.build_llama(dict(name_or_path=str(tmp_path)), 32000)
    with pytest.raises(ValueError, match='exactly one'):
        llm_lib.build_llama(dict(), 32000)
    # a Meta checkpoint of the wrong size names the file and the shape
    meta = tmp_path / 'meta'
    meta.mkdir()
    with open(meta / 'params.json', 'w') as f:
        json.dump(dict(TINY_LLAMA, vocab_size=-1), f)
    torch.save({'tok_embeddings.weight': torch.zeros(VOCAB, 32)},
               meta / 'consolidated.00.pth')
    with pytest.raises(
            ValueError, match=r'consolidated\.00\.pth.*\(97, 32\).*dim=64'):
        llm_lib.build_llama(dict(meta_dir=str(meta)), VOCAB)
    with pytest.raises(ValueError, match='vocab_size=97.*50 tokens'):
        llm_lib.build_llama(
            dict(params=dict(TINY_LLAMA, vocab_size=VOCAB)), 50)


def test_meta_transformers_row_permutation_roundtrip():
    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import (
        hf_to_meta_rows, meta_to_hf_rows, needs_row_permutation)
    w = torch.randn(4 * 8, 5)
    torch.testing.assert_close(hf_to_meta_rows(w, 4), hf_rows_to_meta(w, 4))
    torch.testing.assert_close(meta_to_hf_rows(hf_to_meta_rows(w, 4), 4), w)
    b = torch.arange(16.)
    # head of 8: Meta rows (0, 1), (2, 3) ... -> transformers rows i, i + 4
    assert meta_to_hf_rows(b, 2)[:8].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert needs_row_permutation('llama.layers.0.attention.wq.bias') == 'q'
    assert needs_row_permutation(
        'llama.layers.0.attention.lora_wk_l2.weight') == 'k'
    assert needs_row_permutation(
        'llama.layers.0.attention.lora_wq_l1.weight') is None
    assert needs_row_permutation('llama.layers.0.attention.wo.bias') is None
    assert needs_row_permutation('llama.layers.0.attention.wq.scale') is None
    assert needs_row_permutation('llama.layers.0.attention.wq.scale',
                                 'paper') == 'q'


def _write_meta_llama(model, path):
    """The tiny model's base LLaMA as Meta's params.json + consolidated."""
    path.mkdir()
    sd = {
        k[len('llama.'):]: v.clone()
        for k, v in meta_base_from_hf(model.llama,
                                      TINY_LLAMA['n_heads']).items()
    }
    torch.save(sd, path / 'consolidated.00.pth')
    with open(path / 'params.json', 'w') as f:
        json.dump(dict(TINY_LLAMA, vocab_size=VOCAB), f)


def test_meta_and_transformers_llama_sources_agree(tmp_path):
    src = randomize_adapters(build_tiny(seed=4))
    _write_meta_llama(src, tmp_path / 'meta')
    from_meta = build_tiny(llm=dict(meta_dir=str(tmp_path / 'meta')))
    from visionllama_mm.multimodal.llama_adapter_v2.llm import build_llama
    hf_dir = str(tmp_path / 'hf')
    build_llama(dict(meta_dir=str(tmp_path / 'meta')),
                VOCAB).save_pretrained(hf_dir)
    from_hf = build_tiny(llm=dict(name_or_path=hf_dir))
    adapters = src.state_dict()
    images, tokens = _inputs(3)
    outs = []
    for model in (src, from_meta, from_hf):
        model.load_state_dict(adapters, strict=False)
        # CLIP is random per build; share src's
        model.clip.load_state_dict(src.clip.state_dict())
        with torch.no_grad():
            outs.append(model.eval().forward_llm(tokens,
                                                 model.forward_visual(images)))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], atol=1e-5, rtol=1e-5)


def test_mmpretrain_clip_matches_transformers_clip(tmp_path):
    """The mmpretrain ViT back-end gives the same all-token features."""
    pytest.importorskip('mmpretrain')
    model = build_tiny()
    hf = model.clip.backbone
    c = TINY_CLIP['hidden_size']
    state = {
        'backbone.patch_embed.projection.weight':
        hf.vision_model.embeddings.patch_embedding.weight,
        'backbone.cls_token':
        hf.vision_model.embeddings.class_embedding.view(1, 1, c),
        'backbone.pos_embed':
        hf.vision_model.embeddings.position_embedding.weight[None],
        'backbone.pre_norm.weight':
        hf.vision_model.pre_layrnorm.weight,
        'backbone.pre_norm.bias':
        hf.vision_model.pre_layrnorm.bias,
        'backbone.ln1.weight':
        hf.vision_model.post_layernorm.weight,
        'backbone.ln1.bias':
        hf.vision_model.post_layernorm.bias,
        'projection.proj':
        hf.visual_projection.weight.t(),
    }
    for i, layer in enumerate(hf.vision_model.encoder.layers):
        p = f'backbone.layers.{i}.'
        a = layer.self_attn
        state.update({
            p + 'ln1.weight':
            layer.layer_norm1.weight,
            p + 'ln1.bias':
            layer.layer_norm1.bias,
            p + 'ln2.weight':
            layer.layer_norm2.weight,
            p + 'ln2.bias':
            layer.layer_norm2.bias,
            p + 'attn.qkv.weight':
            torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
            p + 'attn.qkv.bias':
            torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
            p + 'attn.proj.weight':
            a.out_proj.weight,
            p + 'attn.proj.bias':
            a.out_proj.bias,
            p + 'ffn.layers.0.0.weight':
            layer.mlp.fc1.weight,
            p + 'ffn.layers.0.0.bias':
            layer.mlp.fc1.bias,
            p + 'ffn.layers.1.weight':
            layer.mlp.fc2.weight,
            p + 'ffn.layers.1.bias':
            layer.mlp.fc2.bias,
        })
    path = str(tmp_path / 'clip_mmpretrain.pth')
    torch.save(
        {'state_dict': {
            k: v.detach().clone()
            for k, v in state.items()
        }}, path)
    from visionllama_mm.multimodal.llama_adapter_v2.visual import \
        build_clip_encoder
    enc = build_clip_encoder(
        dict(
            type='mmpretrain',
            backbone=dict(
                arch=dict(
                    embed_dims=c,
                    num_layers=TINY_CLIP['num_hidden_layers'],
                    num_heads=TINY_CLIP['num_attention_heads'],
                    feedforward_channels=TINY_CLIP['intermediate_size']),
                img_size=TINY_CLIP['image_size'],
                patch_size=TINY_CLIP['patch_size'],
                pre_norm=True,
                norm_cfg=dict(type='LN', eps=1e-5),
                layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')),
                final_norm=True,
                out_type='raw'),
            out_channels=TINY_CLIP['projection_dim'],
            pretrained=path))
    images, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            enc(images), model.clip(images), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="final_norm=True"):
        build_clip_encoder(
            dict(
                type='mmpretrain',
                backbone=dict(arch='b', final_norm=False, out_type='raw')))


# ----------------------------------------------------------------------
# text, loss and generation (real SentencePiece tokenizer)
# ----------------------------------------------------------------------
@pytest.fixture(scope='module')
def tok_model(skimage_data):
    return build_tiny(
        llm=dict(params=dict(TINY_LLAMA, vocab_size=skimage_data['vocab'])),
        tokenizer=dict(
            type='LlamaTokenizer', name_or_path=skimage_data['tokenizer']),
        max_words=128)


def _samples(**fields):
    from mmpretrain.structures import DataSample
    out = []
    for values in zip(*fields.values()):
        s = DataSample()
        for k, v in zip(fields, values):
            s.set_field(v, k)
        out.append(s)
    return out


def test_prompts_exact_strings():
    from visionllama_mm.multimodal import (PROMPT_NO_INPUT, PROMPT_WITH_INPUT,
                                           format_prompt)
    assert format_prompt('Describe.') == (
        'Below is an instruction that describes a task. Write a response '
        'that appropriately completes the request.\n\n### Instruction:\n'
        'Describe.\n\n### Response:')
    assert format_prompt('Q', '  ') == PROMPT_NO_INPUT.format(instruction='Q')
    assert format_prompt('Q', 'ctx') == (
        'Below is an instruction that describes a task, paired with an input '
        'that provides further context. Write a response that appropriately '
        'completes the request.\n\n### Instruction:\nQ\n\n### Input:\nctx\n\n'
        '### Response:')
    assert format_prompt('Q', 'a', context='OCR: STOP') == \
        PROMPT_WITH_INPUT.format(instruction='Q', input='a\nOCR: STOP')


def test_training_tokens_and_labels(tok_model, skimage_data):
    tok = tok_model.tokenizer
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=skimage_data['tokenizer'])
    text = 'a brown tabby cat with green eyes'
    assert tok.encode(text) == [1] + sp.encode(text)  # official ids
    assert tok.encode(text, bos=False, eos=True) == sp.encode(text) + [2]
    assert tok.decode(sp.encode(text)) == text
    samples = _samples(gt_caption=['a cat', 'a grey wall made of bricks'])
    tokens, labels = tok_model.tokenize_for_training(samples)
    prompt = tok_model.build_prompt(samples[0])
    assert prompt.endswith('Generate caption of this image\n\n### Response:')
    n_prompt = len(tok.encode(prompt))
    full = tok.encode(prompt + 'a cat', bos=True, eos=True)
    assert tokens[0, :len(full)].tolist() == full[:tok_model.max_words]
    assert tokens[0, 0] == tok.bos_id == 1
    assert labels[0, :n_prompt].eq(0).all()
    assert labels[0, n_prompt:len(full)].tolist() == full[n_prompt:]
    assert tokens.shape[1] <= tok_model.max_words


def test_loss_is_masked_cross_entropy(tok_model):
    model = randomize_adapters(copy.deepcopy(tok_model))
    samples = _samples(
        question=['What is it?', 'Name a color.'],
        gt_answer=['A cat.', 'Red.'],
        text_only=[False, True])
    images, _ = _inputs()
    loss = model.loss(images, samples)['loss']
    tokens, labels = model.tokenize_for_training(samples)
    keep = torch.tensor([1.0, 0.0])[:, None, None, None]
    logits = model.forward_llm(tokens, model.forward_visual(images * keep))
    ref = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=0)
    torch.testing.assert_close(loss, ref)
    # nothing supervised (answer truncated away): zero loss, zero grads
    model.max_words = 5
    empty = model.loss(images, samples)['loss']
    assert empty.item() == 0.0
    empty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.abs().sum() == 0 for g in grads)


@pytest.mark.parametrize('checkpointing', [False, True])
def test_joint_training_routes_gradients(tok_model, checkpointing):
    """Each side gets exactly its own samples' gradient, with and without
    gradient checkpointing (whose recomputation must stop the same side)."""
    model = copy.deepcopy(tok_model).train()
    model.fusion = 'early'
    model.set_phase('joint')
    randomize_adapters(model)
    images, _ = _inputs(4, b=4)
    caption = _samples(gt_caption=['a cat', 'a dark sky'])
    instruct = _samples(
        question=['Name a color.', 'What is it?'],
        gt_answer=['Red.', 'A rocket.'],
        text_only=[True, False])

    def grads(imgs, samples):
        model.zero_grad(set_to_none=True)
        model.loss(imgs, samples)['loss'].backward()
        return {
            n: p.grad
            for n, p in model.named_parameters() if p.requires_grad
        }

    g_cap = grads(images[:2], caption)
    g_ins = grads(images[2:], instruct)
    g_mix = grads(images, caption + instruct)
    if checkpointing:
        model.gradient_checkpointing = True
        g_ckpt = grads(images, caption + instruct)
        assert g_ckpt.keys() == g_mix.keys()
        for n, g in g_mix.items():
            if g is None:
                assert g_ckpt[n] is None, n
            else:
                torch.testing.assert_close(g_ckpt[n], g)
    side = {n: model.param_side(n) for n in g_mix}
    for n, s in side.items():
        if s == 'visual':
            assert g_ins[n] is None, n
        else:
            assert g_cap[n] is None, n
    assert any(g_cap[n] is not None and g_cap[n].abs().sum() > 0 for n in side
               if side[n] == 'visual')
    assert any(g_ins[n] is not None and g_ins[n].abs().sum() > 0 for n in side
               if side[n] == 'language')
    # mixed batch: each side gets exactly its own samples' gradient
    _, lab_c = model.tokenize_for_training(caption)
    _, lab_i = model.tokenize_for_training(instruct)
    n_c = (lab_c[:, 1:] != 0).sum().item()
    n_i = (lab_i[:, 1:] != 0).sum().item()
    for n, s in side.items():
        own = g_cap[n] if s == 'visual' else g_ins[n]
        scale = (n_c if s == 'visual' else n_i) / (n_c + n_i)
        if own is None:
            assert g_mix[n] is None or g_mix[n].abs().sum() == 0
        else:
            torch.testing.assert_close(
                g_mix[n], own * scale, atol=1e-6, rtol=1e-4)


def test_generation_kv_cache_matches_recompute(tok_model):
    model = randomize_adapters(copy.deepcopy(tok_model)).eval()
    images, _ = _inputs(5, b=1)
    prompt = model.build_prompt(_samples(gt_caption=['x'])[0])
    texts = model.generate(images, [prompt], max_new_tokens=8, temperature=0.0)
    tok = model.tokenizer
    ids = tok.encode(prompt)
    visual = model.forward_visual(images)
    out = []
    with torch.no_grad():
        for _ in range(8):
            logits = model.forward_llm(torch.tensor([ids + out]), visual)
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_id:
                break
            out.append(nxt)
    assert texts == [tok.decode(out).strip()]


def test_batched_generation_left_padding(tok_model):
    model = randomize_adapters(copy.deepcopy(tok_model)).eval()
    images, _ = _inputs(6, b=2)
    prompts = ['Name a color.', 'What does the image show in the dark?']
    prompts = [model.build_prompt(_samples(question=[p])[0]) for p in prompts]
    together = model.generate(
        images, prompts, max_new_tokens=6, temperature=0.0)
    alone = [
        model.generate(
            images[i:i + 1], [p], max_new_tokens=6, temperature=0.0)[0]
        for i, p in enumerate(prompts)
    ]
    assert together == alone
    # sampling with a seed is reproducible; max_seq_len bounds the output
    a = model.generate(images, prompts, max_new_tokens=5, seed=3)
    b = model.generate(images, prompts, max_new_tokens=5, seed=3)
    assert a == b
    model.max_seq_len = len(model.tokenizer.encode(prompts[1])) + 2
    short = model.generate(images, prompts, max_new_tokens=50, temperature=0.0)
    assert all(len(model.tokenizer.encode(t, bos=False)) <= 3 for t in short)
    model.max_seq_len = 5
    with pytest.raises(ValueError, match='max_seq_len'):
        model.generate(images, prompts)


def test_top_p_keeps_the_official_nucleus():
    from visionllama_mm.multimodal.llama_adapter_v2.generation import (
        sample_next_token, sample_top_p)
    probs = torch.tensor([[0.1, 0.5, 0.3, 0.05, 0.05]])
    # exclusive mass before each sorted entry: 0, .5, .8, .9, .95
    g = torch.Generator().manual_seed(0)
    for top_p, kept in ((0.75, {1, 2}), (0.85, {1, 2, 0}), (0.4, {1})):
        seen = {int(sample_top_p(probs, top_p, g)) for _ in range(300)}
        assert seen == kept, top_p
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    assert sample_next_token(logits, 0.0, 0.75).item() == 1


def test_predict_writes_fields_and_expert_context(tok_model):
    model = copy.deepcopy(tok_model).eval()
    images, _ = _inputs(7)
    out = model.predict(images, None, max_new_tokens=3, temperature=0.0)
    assert all(isinstance(s.pred_caption, str) for s in out)
    model.task = 'vqa'
    samples = _samples(question=['What is it?'] * 2, context=['a cat', ''])
    prompts = [model.build_prompt(s) for s in samples]
    assert '### Input:\na cat\n\n' in prompts[0]
    assert '### Input' not in prompts[1]
    out = model.predict(images, samples, max_new_tokens=3, temperature=0.0)
    assert all(isinstance(s.pred_answer, str) for s in out)
    with pytest.raises(ValueError, match='question'):
        model.predict(images, None)
    model.prompt_tmpl = 'Q: {instruction} ({image_id}) A:'
    s = _samples(question=['Why?'], image_id=['42'])[0]
    assert model.build_prompt(s) == 'Q: Why? (42) A:'
    with pytest.raises(RuntimeError, match='Invalid mode'):
        model(images, samples, mode='tensor')


def test_gradient_checkpointing_same_gradients(tok_model):
    model = randomize_adapters(copy.deepcopy(tok_model)).train()
    model.set_phase('finetune')
    samples = _samples(question=['What is it?'], gt_answer=['A cat.'])
    images, _ = _inputs(8, b=1)

    def run():
        model.zero_grad(set_to_none=True)
        loss = model.loss(images, samples)['loss']
        loss.backward()
        return loss.detach(), {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.grad is not None
        }

    loss_a, grads_a = run()
    model.gradient_checkpointing = True
    loss_b, grads_b = run()
    torch.testing.assert_close(loss_a, loss_b)
    assert set(grads_a) == set(grads_b) and grads_a
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n])
    assert all(re.search(r'norm|bias', n) for n in grads_a)


def test_half_precision_llama_and_clip(tok_model, skimage_data):
    """bf16 LLaMA/CLIP: frozen inference without autocast; training keeps
    the trainable tensors in fp32 and runs under autocast."""
    model = build_tiny(
        llm=dict(
            params=dict(TINY_LLAMA, vocab_size=skimage_data['vocab']),
            dtype='bfloat16'),
        vision_encoder=dict(type='hf', config=TINY_CLIP, dtype='bfloat16'),
        tokenizer=dict(
            type='LlamaTokenizer', name_or_path=skimage_data['tokenizer']),
        phase='frozen').eval()
    images, _ = _inputs(9)
    out = model.predict(images, None, max_new_tokens=3, temperature=0.0)
    assert all(isinstance(s.pred_caption, str) for s in out)
    model.set_phase('finetune')
    trainable = model.trainable_parameters()
    assert trainable and all(p.dtype == torch.float32
                             for p in trainable.values())
    assert model.llama.model.embed_tokens.weight.dtype == torch.bfloat16
    samples = _samples(question=['What is it?'] * 2, gt_answer=['A cat.'] * 2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model.loss(images, samples)['loss']
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in trainable.values() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)

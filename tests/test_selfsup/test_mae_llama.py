"""MAELLaMA: masking, per-sample RoPE, class token, no-mask path, init."""
import math

import pytest
import torch

from visionllama_mm.layers import RotaryEmbedding2D, apply_rope
from visionllama_mm.registry import MODELS
from visionllama_mm.selfsup import MAELLaMA

TINY = dict(embed_dims=32, num_layers=2, num_heads=2)


def tiny(**kwargs):
    cfg = dict(arch=TINY, img_size=32, patch_size=8)
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = MAELLaMA(**cfg)
    model.init_weights()
    # non-trivial norms and biases so that every path matters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias') or 'ln' in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def reference_encode(model, tokens, ids_keep, hw):
    """docs/visionllama.md#mae-encoder written out for ONE sample: (K, C) kept
    tokens, (K,) ids.

    Blocks are applied by hand (ln1 -> qkv -> RoPE at the kept grid
    positions -> softmax attention -> proj; ln2 -> SwiGLU), then the raw
    class token is prepended and ln1 applied.
    """
    H, W = hw
    coords = torch.stack([ids_keep % W, ids_keep // W], -1).float()
    cos, sin = RotaryEmbedding2D(model.head_dim).tables(coords)
    x = tokens[None]
    for blk in model.layers:
        h = blk.ln1(x)
        B, N, C = h.shape
        qkv = blk.attn.qkv(h).reshape(B, N, 3, model.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = x + blk.attn.proj(a)
        gate, up = blk.ffn.w12(blk.ln2(x)).chunk(2, dim=-1)
        x = x + blk.ffn.w3(torch.nn.functional.silu(gate) * up)
    x = torch.cat([model.cls_token[0], x[0]], dim=0)
    return model.ln1(x)


def test_registry_and_defaults():
    model = MODELS.build(dict(type='MAELLaMA', arch=TINY, patch_size=8))
    assert isinstance(model, MAELLaMA)
    assert model.with_cls_token and model.out_type == 'raw'
    assert model.mask_ratio == 0.75
    assert not hasattr(model, 'pos_embed')


def test_random_masking_semantics():
    model = tiny()
    B, N, C = 3, 16, 32
    x = torch.randn(B, N, C)
    noise = torch.rand(B, N)
    kept, mask, ids_restore, ids_keep = model.random_masking(x, noise=noise)
    K = int(N * (1 - 0.75))
    assert kept.shape == (B, K, C) and ids_keep.shape == (B, K)
    ids_shuffle = noise.argsort(dim=1)
    for b in range(B):
        # kept = the K smallest noises, in ascending-noise order
        assert torch.equal(ids_keep[b], ids_shuffle[b, :K])
        torch.testing.assert_close(kept[b], x[b, ids_keep[b]])
        expected = torch.ones(N)
        expected[ids_keep[b]] = 0
        assert torch.equal(mask[b], expected)  # 1 = removed, grid order
        # ids_restore inverts the shuffle
        assert torch.equal(ids_shuffle[b][ids_restore[b]], torch.arange(N))
    assert torch.all(mask.sum(1) == N - K)
    # different samples get different masks
    assert not torch.equal(mask[0], mask[1])


def test_masked_forward_matches_reference_per_sample():
    model = tiny()
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(1)
    latent, mask, ids_restore = model(x)
    N, K = 16, 4
    assert latent.shape == (3, 1 + K, 32)
    assert mask.shape == (3, N) and ids_restore.shape == (3, N)
    tokens, hw = model.patch_embed(x)
    with torch.no_grad():
        for b in range(3):
            ids_keep = ids_restore[b].argsort()[:K]
            # the kept ids are exactly the unmasked positions
            assert torch.equal(mask[b, ids_keep], torch.zeros(K))
            ref = reference_encode(model, tokens[b, ids_keep], ids_keep, hw)
            torch.testing.assert_close(latent[b], ref, atol=1e-5, rtol=1e-5)


def test_permuting_kept_tokens_with_positions_permutes_output():
    """docs/visionllama.md#reference-formula-and-tested-properties item 8:
    output equivariant to (token, position) perms."""
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    tokens, hw = model.patch_embed(x)
    kept, _, _, ids_keep = model.random_masking(tokens)
    perm = torch.stack([torch.randperm(kept.shape[1]) for _ in range(2)])
    kept_p = torch.gather(kept, 1, perm[..., None].expand_as(kept))
    ids_p = torch.gather(ids_keep, 1, perm)
    with torch.no_grad():
        out = model.forward_kept(kept, ids_keep, hw)
        out_p = model.forward_kept(kept_p, ids_p, hw)
    torch.testing.assert_close(out_p[:, 0], out[:, 0])  # class slot
    expected = torch.gather(out[:, 1:], 1, perm[..., None].expand_as(out[:,
                                                                         1:]))
    torch.testing.assert_close(out_p[:, 1:], expected, atol=1e-5, rtol=1e-5)
    # permuting tokens but NOT their positions changes the result
    with torch.no_grad():
        out_wrong = model.forward_kept(kept_p, ids_keep, hw)
    assert not torch.allclose(out_wrong[:, 1:], expected, atol=1e-4)


def test_sample_independence_and_positions_matter():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    tokens, hw = model.patch_embed(x)
    ids_a = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    kept = torch.gather(tokens, 1, ids_a[..., None].expand(-1, -1, 32))
    with torch.no_grad():
        both = model.forward_kept(kept, ids_a, hw)
        single = model.forward_kept(kept[1:], ids_a[1:], hw)
        shifted = model.forward_kept(kept[1:], ids_a[1:] + 8, hw)
        # a shift of all positions by whole rows leaves attention unchanged
        # (relative RoPE) ...
        torch.testing.assert_close(shifted, single, atol=1e-5, rtol=1e-5)
        # ... but a change of the relative layout does not
        moved = model.forward_kept(kept[1:], torch.tensor([[1, 6, 11, 4]]), hw)
    torch.testing.assert_close(both[1:], single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(moved[:, 1:], single[:, 1:], atol=1e-4)


def test_class_token_is_not_encoded():
    model = tiny()
    latent, _, _ = model(torch.randn(2, 3, 32, 32))
    expected = model.ln1(model.cls_token[0, 0])
    for b in range(2):
        torch.testing.assert_close(latent[b, 0], expected)


def test_unmasked_path_equals_masked_path_without_masking():
    model = tiny(mask_ratio=0.)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, hw = model.patch_embed(x)
        ids = torch.arange(16).expand(2, 16)
        kept_all = model.forward_kept(tokens, ids, hw)
        (raw, ) = model(x, mask=None)
        (raw_false, ) = model(x, mask=False)
        feats = model.forward_features(x)
    assert raw.shape == (2, 17, 32)
    torch.testing.assert_close(raw, kept_all, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(raw_false, raw)
    torch.testing.assert_close(feats, raw)
    # with mask_ratio 0 the masked path is a permutation of the same tokens
    latent, mask, ids_restore = model(x)
    assert torch.all(mask == 0)
    restored = torch.gather(latent[:, 1:], 1,
                            ids_restore[..., None].expand(-1, -1, 32))
    torch.testing.assert_close(restored, raw[:, 1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('out_type,shape', [('raw', (2, 17, 32)),
                                            ('featmap', (2, 32, 4, 4)),
                                            ('avg_featmap', (2, 32)),
                                            ('cls_token', (2, 32))])
def test_unmasked_out_types(out_type, shape):
    model = tiny(out_type=out_type, out_indices=[0, 1])
    outs = model(torch.randn(2, 3, 32, 32), mask=None)
    assert len(outs) == 2
    for out in outs:
        assert out.shape == shape
    if out_type == 'cls_token':
        # intermediate: raw class token; last: ln1(class token)
        torch.testing.assert_close(outs[0][0], model.cls_token[0, 0])
        torch.testing.assert_close(outs[1][0], model.ln1(model.cls_token[0,
                                                                         0]))
    # masking still returns the raw latent whatever out_type is
    latent, _, _ = model(torch.randn(2, 3, 32, 32))
    assert latent.shape == (2, 5, 32)


def test_non_square_input():
    model = tiny()
    x = torch.randn(2, 3, 32, 48)  # 4 x 6 tokens
    latent, mask, ids_restore = model(x)
    assert mask.shape == (2, 24) and latent.shape == (2, 1 + 6, 32)
    tokens, hw = model.patch_embed(x)
    assert hw == (4, 6)
    ids_keep = ids_restore[0].argsort()[:6]
    with torch.no_grad():
        ref = reference_encode(model, tokens[0, ids_keep], ids_keep, hw)
    torch.testing.assert_close(latent[0], ref, atol=1e-5, rtol=1e-5)


def test_backward_all_parameters_get_gradients():
    model = tiny(drop_path_rate=0.1).train()
    latent, mask, _ = model(torch.randn(2, 3, 32, 32))
    latent.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_gradient_checkpointing_same_result():
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    ref = model(x)[0]
    model.set_grad_checkpointing(True)
    torch.manual_seed(3)
    out = model(x)[0]
    torch.testing.assert_close(out, ref)


def test_init_official():
    torch.manual_seed(0)
    model = MAELLaMA(
        arch=dict(embed_dims=256, num_layers=1, num_heads=4), patch_size=16)
    model.init_weights()
    w = model.patch_embed.projection.weight  # (256, 3, 16, 16)
    bound = math.sqrt(6. / (3 * 16 * 16 + 256))  # xavier on (C, 3*16*16)
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.95 * bound
    assert abs(model.cls_token.std().item() - 0.02) < 0.004
    assert model.cls_token.abs().max() > 0.04  # normal, not truncated at 2σ
    ffn = model.layers[0].ffn
    assert ffn.w12.bias.abs().max() < 1e-5  # N(0, 1e-6)


def test_pretrained_init_keeps_loaded_values(tmp_path):
    src = tiny()
    path = tmp_path / 'mae_backbone.pth'
    torch.save({'state_dict': src.state_dict()}, path)
    model = MAELLaMA(
        arch=TINY,
        img_size=32,
        patch_size=8,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_loads_official_key_layout_and_drops_pos_embed():
    model = tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['pos_embed'] = torch.zeros(1, 17, 32)
    fresh = MAELLaMA(arch=TINY, img_size=32, patch_size=8)
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


@pytest.mark.parametrize('ratio', [1.0, -0.1, 1.5, 'half'])
def test_bad_mask_ratio(ratio):
    with pytest.raises(ValueError, match='mask_ratio'):
        MAELLaMA(arch=TINY, patch_size=8, mask_ratio=ratio)


def test_bad_mask_and_noise():
    model = tiny()
    with pytest.raises(ValueError, match='mask must be'):
        model(torch.randn(1, 3, 32, 32), mask=torch.ones(1, 16))
    with pytest.raises(ValueError, match='noise'):
        model.random_masking(torch.randn(2, 16, 32), noise=torch.rand(2, 8))
    with pytest.raises(ValueError, match='keeps no patch'):
        model.random_masking(torch.randn(2, 2, 32), mask_ratio=0.9)

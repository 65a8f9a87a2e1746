"""Converter of official plain VisionLLaMA checkpoints.

Synthetic checkpoints are built with exactly the layout of the official files
(docs/visionllama.md#mae-checkpoints: MAE epoch files as mmengine runner
checkpoints, FT / LP model files; docs/visionllama.md#plain-model-deit-style:
deit-style ``vit_llama_rope_*`` files) at a small width, converted, loaded
strictly, and compared with a reference forward of the official models written
here from the docs (complex-number RoPE on the official square grid of side
floor(sqrt(N)), allowed in tests).
"""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tool_utils import load_tool

from visionllama_mm.backbones import VisionLLaMA, VisionLLaMADeiT

conv = load_tool('tools/model_converters/visionllama_to_mmpretrain.py')

C, HEADS, DEPTH, PATCH, IMG = 64, 2, 2, 8, 32  # head dim 32, 4 x 4 tokens
HIDDEN = 768  # the mmpretrain rule: ceil256(8 * 4C / 3) for C = 64
DEIT_HIDDEN = 256  # the LLaMA rule: ceil256(8 C / 3)

# ---------------------------------------------------------------------------
# reference forward of the official models (docs/visionllama.md#2d-rope,
# docs/visionllama.md#plain-structure,
# docs/visionllama.md#plain-model-deit-style)
# ---------------------------------------------------------------------------


def official_freqs_cis(head_dim, num_patches, use_cls=False, scale=1.):
    """Complex table on a square grid, flat positions (-1 with a cls)."""
    side = int(num_patches**0.5)
    pos = torch.arange(-1 if use_cls else 0, num_patches)
    x = (pos % side).double() * scale
    y = torch.div(pos, side, rounding_mode='floor').double() * scale
    theta = 10000.**(-torch.arange(0, head_dim, 4).double() / head_dim)
    angles = torch.stack([torch.outer(x, theta), torch.outer(y, theta)], -1)
    return torch.polar(torch.ones_like(angles), angles).flatten(1)


def official_rope(t, cis):
    """t (B, N, heads, d) times exp(i phi) per adjacent pair."""
    z = torch.view_as_complex(t.double().reshape(*t.shape[:-1], -1, 2))
    return torch.view_as_real(z * cis[None, :, None]).flatten(3)


def official_attention(x, sd, p, cis):
    B, N, _ = x.shape
    qkv = F.linear(x, sd[p + 'qkv.weight'], sd[p + 'qkv.bias'])
    q, k, v = qkv.reshape(B, N, 3, HEADS, C // HEADS).unbind(2)
    q, k = official_rope(q, cis), official_rope(k, cis)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v.double()))
    attn = (q @ k.transpose(-2, -1) * (C // HEADS)**-0.5).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(out, sd[p + 'proj.weight'].double(),
                    sd[p + 'proj.bias'].double())


def ln(x, sd, p, eps=1e-6):
    return F.layer_norm(x, (C, ), sd[p + 'weight'].double(),
                        sd[p + 'bias'].double(), eps)


def official_mmpretrain_encoder(sd, img, final_norm, prefix='backbone.'):
    """mmpretrain VisionLLaMA (no class token) up to the last block."""
    sd = {
        k[len(prefix):]: v.double()
        for k, v in sd.items() if k.startswith(prefix)
    }
    x = F.conv2d(
        img.double(),
        sd['patch_embed.projection.weight'],
        sd['patch_embed.projection.bias'],
        stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    cis = official_freqs_cis(C // HEADS, x.shape[1])
    for i in range(DEPTH):
        p = f'layers.{i}.'
        x = x + official_attention(ln(x, sd, p + 'ln1.'), sd, p + 'attn.', cis)
        h = F.linear(
            ln(x, sd, p + 'ln2.'), sd[p + 'ffn.w12.weight'],
            sd[p + 'ffn.w12.bias'])
        gate, up = h.chunk(2, -1)
        x = x + F.linear(
            F.silu(gate) * up, sd[p + 'ffn.w3.weight'], sd[p + 'ffn.w3.bias'])
    if final_norm:
        x = ln(x, sd, 'ln1.')
    return x


def official_ft_logits(sd, img):
    x = official_mmpretrain_encoder(sd, img, final_norm=False)
    feat = ln(x.mean(1), sd, 'backbone.ln2.')
    return F.linear(feat, sd['head.fc.weight'].double(),
                    sd['head.fc.bias'].double())


def official_lp_logits(sd, img):
    x = official_mmpretrain_encoder(sd, img, final_norm=False)
    feat = ln(x.mean(1), sd, 'backbone.ln2.')
    feat = (feat - sd['neck.bn.running_mean'].double()
            ) / torch.sqrt(sd['neck.bn.running_var'].double() + 1e-6)
    return F.linear(feat, sd['head.layers.head.weight'].double(),
                    sd['head.layers.head.bias'].double())


def official_deit_logits(sd, img, as_scale=False):
    """deit ``VisionLLaMA`` with ``LAMABlock``
    (docs/visionllama.md#plain-model-deit-style)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(
        img.double(),
        sd['patch_embed.proj.weight'],
        sd['patch_embed.proj.bias'],
        stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    scale = 224 / img.shape[-2] if as_scale else 1.
    cis = official_freqs_cis(C // HEADS, x.shape[1], use_cls=True, scale=scale)
    x = torch.cat([sd['cls_token'].expand(x.shape[0], -1, -1), x], 1)
    for i in range(DEPTH):
        p = f'blocks.{i}.'
        a = official_attention(ln(x, sd, p + 'norm1.'), sd, p + 'attn.', cis)
        x = x + sd[p + 'gamma_1'] * a
        h = ln(x, sd, p + 'norm2.')
        m = F.linear(
            F.silu(F.linear(h, sd[p + 'mlp.c_fc1.weight'])) *
            F.linear(h, sd[p + 'mlp.c_fc2.weight']),
            sd[p + 'mlp.c_proj.weight'])
        x = x + sd[p + 'gamma_2'] * m
    x = ln(x, sd, 'norm.')[:, 0]
    return F.linear(x, sd['head.weight'], sd['head.bias'])


# ---------------------------------------------------------------------------
# synthetic official files
# ---------------------------------------------------------------------------


def rand(*shape):
    return torch.randn(*shape) * 0.1


def mmpretrain_backbone_keys(with_cls=True, ln1=True, ln2=False):
    sd = OrderedDict()
    if with_cls:
        sd['backbone.cls_token'] = rand(1, 1, C)
    n = (IMG // PATCH)**2
    sd['backbone.pos_embed'] = rand(1, n + int(with_cls), C)
    sd['backbone.patch_embed.projection.weight'] = rand(C, 3, PATCH, PATCH)
    sd['backbone.patch_embed.projection.bias'] = rand(C)
    for i in range(DEPTH):
        p = f'backbone.layers.{i}.'
        sd[p + 'ln1.weight'] = 1 + rand(C)
        sd[p + 'ln1.bias'] = rand(C)
        sd[p + 'attn.qkv.weight'] = rand(3 * C, C)
        sd[p + 'attn.qkv.bias'] = rand(3 * C)
        sd[p + 'attn.proj.weight'] = rand(C, C)
        sd[p + 'attn.proj.bias'] = rand(C)
        sd[p + 'ln2.weight'] = 1 + rand(C)
        sd[p + 'ln2.bias'] = rand(C)
        sd[p + 'ffn.w12.weight'] = rand(2 * HIDDEN, C)
        sd[p + 'ffn.w12.bias'] = rand(2 * HIDDEN)
        sd[p + 'ffn.w3.weight'] = rand(C, HIDDEN)
        sd[p + 'ffn.w3.bias'] = rand(C)
    if ln1:
        sd['backbone.ln1.weight'] = 1 + rand(C)
        sd['backbone.ln1.bias'] = rand(C)
    if ln2:
        sd['backbone.ln2.weight'] = 1 + rand(C)
        sd['backbone.ln2.bias'] = rand(C)
    return sd


def mae_decoder_keys(dec=16, n=17):
    sd = OrderedDict()
    sd['neck.mask_token'] = rand(1, 1, dec)
    sd['neck.decoder_pos_embed'] = rand(1, n, dec)
    sd['neck.decoder_embed.weight'] = rand(dec, C)
    sd['neck.decoder_embed.bias'] = rand(dec)
    p = 'neck.decoder_blocks.0.'
    for name, shape in [('ln1.weight', (dec, )), ('ln1.bias', (dec, )),
                        ('attn.qkv.weight', (3 * dec, dec)),
                        ('attn.qkv.bias', (3 * dec, )),
                        ('attn.proj.weight', (dec, dec)),
                        ('attn.proj.bias', (dec, )), ('ln2.weight', (dec, )),
                        ('ln2.bias', (dec, )),
                        ('ffn.layers.0.0.weight', (4 * dec, dec)),
                        ('ffn.layers.0.0.bias', (4 * dec, )),
                        ('ffn.layers.1.weight', (dec, 4 * dec)),
                        ('ffn.layers.1.bias', (dec, ))]:
        sd[p + name] = rand(*shape)
    sd['neck.ln1.weight'] = 1 + rand(dec)
    sd['neck.ln1.bias'] = rand(dec)
    sd['neck.decoder_pred.weight'] = rand(PATCH * PATCH * 3, dec)
    sd['neck.decoder_pred.bias'] = rand(PATCH * PATCH * 3)
    return sd


def mae_epoch_checkpoint():
    """An mmengine runner checkpoint like HF ``epoch_800.pth``."""
    from mmengine.logging import HistoryBuffer
    sd = mmpretrain_backbone_keys(with_cls=True, ln1=True)
    sd.update(mae_decoder_keys())
    lr = HistoryBuffer()
    lr.update(2.4e-3)
    return {
        'meta': {
            'epoch': 800,
            'iter': 250200,
            'seed': 0,
            'experiment_name': 'mae_lama-base-p16_8xb512-amp-coslr-800e_in1k',
            'mmengine_version': '0.8.4',
            'dataset_meta': {},
        },
        'state_dict': sd,
        'message_hub': {
            'log_scalars': {
                'train/lr': lr
            },
            'runtime_info': {
                'epoch': 800,
                'max_iters': np.int64(250200),
                'loss': np.float64(0.41),
                'hist': np.arange(3, dtype=np.float32),
            },
            'resumed_keys': {
                'epoch': True
            },
        },
        'optimizer': {
            'state': {
                0: {
                    'step': torch.tensor(1.),
                    'exp_avg': torch.zeros(C)
                }
            },
            'param_groups': [{
                'lr': 2.4e-3,
                'betas': (0.9, 0.95),
                'params': [0]
            }],
        },
        'param_schedulers': [{
            'start_factor': 1e-9,
            'by_epoch': True
        }],
    }


def ft_state_dict(num_classes=5):
    sd = mmpretrain_backbone_keys(with_cls=False, ln1=False, ln2=True)
    sd['head.fc.weight'] = rand(num_classes, C)
    sd['head.fc.bias'] = rand(num_classes)
    return sd


def lp_state_dict(num_classes=5):
    sd = mmpretrain_backbone_keys(with_cls=False, ln1=False, ln2=True)
    sd['neck.bn.running_mean'] = rand(C)
    sd['neck.bn.running_var'] = 1 + rand(C).abs()
    sd['neck.bn.num_batches_tracked'] = torch.tensor(100)
    sd['head.layers.head.weight'] = rand(num_classes, C)
    sd['head.layers.head.bias'] = rand(num_classes)
    return sd


def deit_checkpoint(num_classes=5):
    import argparse
    sd = OrderedDict()
    sd['cls_token'] = rand(1, 1, C)
    sd['patch_embed.proj.weight'] = rand(C, 3, PATCH, PATCH)
    sd['patch_embed.proj.bias'] = rand(C)
    for i in range(DEPTH):
        p = f'blocks.{i}.'
        sd[p + 'gamma_1'] = rand(C)
        sd[p + 'gamma_2'] = rand(C)
        sd[p + 'norm1.weight'] = 1 + rand(C)
        sd[p + 'norm1.bias'] = rand(C)
        sd[p + 'attn.qkv.weight'] = rand(3 * C, C)
        sd[p + 'attn.qkv.bias'] = rand(3 * C)
        sd[p + 'attn.proj.weight'] = rand(C, C)
        sd[p + 'attn.proj.bias'] = rand(C)
        sd[p + 'norm2.weight'] = 1 + rand(C)
        sd[p + 'norm2.bias'] = rand(C)
        sd[p + 'mlp.c_fc1.weight'] = rand(DEIT_HIDDEN, C)
        sd[p + 'mlp.c_fc2.weight'] = rand(DEIT_HIDDEN, C)
        sd[p + 'mlp.c_proj.weight'] = rand(C, DEIT_HIDDEN)
    sd['norm.weight'] = 1 + rand(C)
    sd['norm.bias'] = rand(C)
    sd['head.weight'] = rand(num_classes, C)
    sd['head.bias'] = rand(num_classes)
    return {
        'model': sd,
        'optimizer': {},
        'lr_scheduler': {},
        'epoch': 799,
        'scaler': {},
        'args': argparse.Namespace(model='vit_llama_rope_small_patch16'),
    }


TINY = dict(embed_dims=C, num_layers=DEPTH, num_heads=HEADS)

# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------


def test_reference_rope_matches_spec_layout():
    # pair j of token n rotates by (x if j even else y) * theta_{j // 2}
    cis = official_freqs_cis(8, 9)
    n = 5  # (x, y) = (2, 1) on the 3 x 3 grid
    angles = torch.angle(cis[n])
    torch.testing.assert_close(
        angles, torch.tensor([2., 1., 0.02, 0.01], dtype=torch.float64))


def test_mae_state_dict_backbone_only_matches_reference():
    torch.manual_seed(0)
    ckpt = mae_epoch_checkpoint()
    sd, meta = conv.convert(ckpt, backbone_only=True)
    assert meta['style'] == 'mmpretrain'
    assert 'pos_embed' not in sd and 'cls_token' in sd
    assert not any(k.startswith(('backbone.', 'neck.')) for k in sd)
    # the encoder without the class token (the downstream use)
    model = VisionLLaMA(
        arch=TINY, patch_size=PATCH, out_type='raw', final_norm=True).eval()
    model.load_state_dict(sd, strict=True)  # hook drops cls_token
    img = torch.randn(2, 3, IMG, IMG)
    ref = official_mmpretrain_encoder(ckpt['state_dict'], img, True)
    torch.testing.assert_close(
        model(img)[0].double(), ref, atol=1e-5, rtol=1e-5)
    # and with the class token kept
    model = VisionLLaMA(
        arch=TINY, patch_size=PATCH, out_type='raw', with_cls_token=True)
    model.load_state_dict(sd, strict=True)
    torch.testing.assert_close(model.cls_token, sd['cls_token'])


def test_mae_keeps_decoder_by_default():
    ckpt = mae_epoch_checkpoint()
    sd, _ = conv.convert(ckpt)
    assert 'neck.decoder_pred.weight' in sd
    assert 'backbone.layers.1.ffn.w3.bias' in sd
    assert 'backbone.pos_embed' not in sd


def test_ft_matches_reference():
    torch.manual_seed(0)
    src = ft_state_dict()
    sd, _ = conv.convert({'state_dict': src, 'meta': {}})
    model = VisionLLaMA(
        arch=TINY, patch_size=PATCH, final_norm=False,
        out_type='avg_featmap').eval()
    head = torch.nn.Linear(C, 5)
    bb = {k[9:]: v for k, v in sd.items() if k.startswith('backbone.')}
    model.load_state_dict(bb, strict=True)
    head.load_state_dict({
        'weight': sd['head.fc.weight'],
        'bias': sd['head.fc.bias']
    })
    img = torch.randn(2, 3, IMG, IMG)
    torch.testing.assert_close(
        head(model(img)[0]).double(),
        official_ft_logits(src, img),
        atol=1e-5,
        rtol=1e-5)


def _classifier(backbone, neck, head):
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope, init_default_scope
    from mmpretrain.registry import MODELS as MMPRE_MODELS
    if DefaultScope.get_current_instance() is None:
        init_default_scope('mmpretrain')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MMPRE_MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=backbone,
                neck=neck,
                head=head)).eval()


def test_ft_and_lp_load_into_mmpretrain_classifier():
    torch.manual_seed(0)
    backbone = dict(
        type='visionllama_mm.VisionLLaMA',
        arch=TINY,
        img_size=IMG,
        patch_size=PATCH,
        out_type='avg_featmap',
        final_norm=False)
    img = torch.randn(2, 3, IMG, IMG)
    # fine-tune model
    src = ft_state_dict()
    sd, _ = conv.convert({'state_dict': src})
    model = _classifier(
        backbone, None,
        dict(type='LinearClsHead', num_classes=5, in_channels=C))
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        logits = model(img, mode='tensor')
    torch.testing.assert_close(
        logits.double(), official_ft_logits(src, img), atol=1e-5, rtol=1e-5)
    # linear-probe model
    src = lp_state_dict()
    sd, _ = conv.convert({'state_dict': src})
    backbone['frozen_stages'] = DEPTH
    model = _classifier(
        backbone, dict(type='ClsBatchNormNeck', input_features=C),
        dict(type='VisionTransformerClsHead', num_classes=5, in_channels=C))
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        logits = model(img, mode='tensor')
    torch.testing.assert_close(
        logits.double(), official_lp_logits(src, img), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('as_variant', [False, True])
def test_deit_matches_reference(as_variant):
    torch.manual_seed(0)
    ckpt = deit_checkpoint()
    sd, meta = conv.convert(ckpt)
    assert meta['style'] == 'deit' and meta['source_key'] == 'model'
    model = VisionLLaMADeiT(
        arch=TINY,
        patch_size=PATCH,
        num_classes=5,
        # upstream s = 224 / H_pixels = (224 / patch) / H_tokens
        as_anchor=224 / PATCH if as_variant else None).eval()
    model.load_state_dict(sd, strict=True)
    img = torch.randn(2, 3, IMG, IMG)
    logits = model.forward_head(model.forward_features(img))
    ref = official_deit_logits(ckpt['model'], img, as_scale=as_variant)
    torch.testing.assert_close(logits.double(), ref, atol=1e-5, rtol=1e-5)


def test_deit_to_mmpretrain_layout():
    torch.manual_seed(0)
    ckpt = deit_checkpoint()
    sd, _ = conv.convert(ckpt, layout='mmpretrain')
    assert 'head.fc.weight' in sd and 'backbone.blocks.1.gamma_2' in sd
    model = _classifier(
        dict(
            type='visionllama_mm.VisionLLaMADeiT',
            arch=TINY,
            patch_size=PATCH,
            out_type='cls_token'), None,
        dict(type='LinearClsHead', num_classes=5, in_channels=C))
    model.load_state_dict(sd, strict=True)
    img = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        logits = model(img, mode='tensor')
    torch.testing.assert_close(
        logits.double(),
        official_deit_logits(ckpt['model'], img),
        atol=1e-5,
        rtol=1e-5)


def test_unconvertible_inputs_are_reported_by_name():
    sd = ft_state_dict()
    del sd['backbone.layers.1.attn.proj.bias']
    sd['backbone.layers.0.attn.rel_pos_h'] = torch.zeros(3)
    with pytest.raises(conv.ConversionError) as err:
        conv.convert({'state_dict': sd})
    assert "missing keys: ['layers.1.attn.proj.bias']" in str(err.value)
    assert "unexpected keys: ['layers.0.attn.rel_pos_h']" in str(err.value)
    sd = ft_state_dict()
    sd['backbone.layers.1.ffn.w3.weight'] = torch.zeros(C, 3)
    with pytest.raises(conv.ConversionError, match='layers.1.ffn.w3.weight'):
        conv.convert({'state_dict': sd})
    ckpt = deit_checkpoint()
    del ckpt['model']['blocks.1.gamma_2']
    with pytest.raises(conv.ConversionError, match='blocks.1.gamma_2'):
        conv.convert(ckpt)
    with pytest.raises(conv.ConversionError, match='cannot tell'):
        conv.convert({'state_dict': {'encoder.weight': torch.zeros(1)}})
    with pytest.raises(conv.ConversionError, match='no weights found'):
        conv.convert({'epoch': 3})
    with pytest.raises(conv.ConversionError, match='no "model_ema"'):
        conv.convert(deit_checkpoint(), key='model_ema')


def test_ema_state_dict():
    src = ft_state_dict()
    ema = OrderedDict(('module.' + k, v) for k, v in src.items())
    ema['steps'] = torch.tensor(10)
    sd, meta = conv.convert({
        'state_dict': src,
        'ema_state_dict': ema
    },
                            key='ema_state_dict')
    assert meta['source_key'] == 'ema_state_dict'
    assert 'backbone.ln2.weight' in sd and 'steps' not in sd


def test_cli_writes_tensors_only_file(tmp_path):
    torch.manual_seed(0)
    ckpt = mae_epoch_checkpoint()
    src = tmp_path / 'epoch_800.pth'
    torch.save(ckpt, src)
    dst = tmp_path / 'converted.pth'
    conv.main([str(src), str(dst)])
    out = torch.load(dst, weights_only=True)
    assert out['meta']['style'] == 'mmpretrain'
    assert out['meta']['source_meta']['epoch'] == 800
    assert 'backbone.pos_embed' not in out['state_dict']
    model = VisionLLaMA(
        arch=TINY,
        patch_size=PATCH,
        out_type='raw',
        final_norm=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    model.init_weights()
    img = torch.randn(1, 3, IMG, IMG)
    ref = official_mmpretrain_encoder(ckpt['state_dict'], img, True)
    torch.testing.assert_close(
        model(img)[0].double(), ref, atol=1e-5, rtol=1e-5)
    # deit file (pickles an argparse.Namespace)
    src = tmp_path / 'best_checkpoint.pth'
    torch.save(deit_checkpoint(), src)
    conv.main([str(src), str(dst), '--layout', 'mmpretrain'])
    out = torch.load(dst, weights_only=True)
    assert 'head.fc.bias' in out['state_dict']
    assert math.isclose(out['state_dict']['backbone.norm.weight'].numel(), C)

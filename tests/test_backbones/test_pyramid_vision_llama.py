"""Tests of PyramidVisionLLaMA (docs/pyramid.md,
docs/pyramid.md#checkpoint-layout, docs/visionllama.md#official-quirks)."""
import copy
import math
import os.path as osp
import sys
from unittest import TestCase

import pytest
import torch
import torch.nn as nn

from visionllama_mm.backbones.pyramid_vision_llama import (
    GroupAttention, GSAttention, PyramidVisionLLaMA, PyramidVisionLLaMADET,
    checkpoint_filter_fn)
from visionllama_mm.layers.attention import RoPEAttention
from visionllama_mm.layers.rope import RotaryEmbedding2D, grid_coords

sys.path.insert(0, osp.dirname(__file__))
import pyramid_reference as ref  # noqa: E402

TINY = ref.TINY
CPU = torch.device('cpu')


def count(model):
    return sum(p.numel() for p in model.parameters())


def set_fused(model, fused):
    for m in model.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = fused


class TestPyramidVisionLLaMA(TestCase):

    def setUp(self):
        self.cfg = dict(arch=copy.deepcopy(TINY))

    def test_arch(self):
        with self.assertRaisesRegex(ValueError, 'arch must be one of'):
            PyramidVisionLLaMA(arch='unknown')
        cfg = copy.deepcopy(self.cfg)
        del cfg['arch']['sr_ratios']
        with self.assertRaisesRegex(ValueError, 'missing'):
            PyramidVisionLLaMA(**cfg)
        cfg = copy.deepcopy(self.cfg)
        cfg['arch']['mlp_ratios'] = [4] * 4
        with self.assertRaisesRegex(ValueError, 'unknown'):
            PyramidVisionLLaMA(**cfg)
        cfg = copy.deepcopy(self.cfg)
        cfg['arch']['depths'] = [2, 2, 2]
        with self.assertRaisesRegex(ValueError, 'one value per stage'):
            PyramidVisionLLaMA(**cfg)
        cfg = copy.deepcopy(self.cfg)
        cfg['arch']['num_heads'] = [2, 2, 3, 4]  # head dim 16 ok, 32/2
        PyramidVisionLLaMA(**cfg)
        cfg['arch']['num_heads'] = [1, 2, 3, 5]  # 128 / 5
        with self.assertRaisesRegex(ValueError, 'multiple of 4'):
            PyramidVisionLLaMA(**cfg)

    def test_invalid_options(self):
        for kwargs, regex in [
            (dict(out_type='cls_token'), 'out_type must be one of'),
            (dict(gsa_key_pos='center'), 'gsa_key_pos must be one of'),
            (dict(anchor_mode='width'), 'anchor_mode must be one of'),
            (dict(out_indices=4), 'out of range'),
            (dict(out_indices=(-5, )), 'out of range'),
            (dict(as_base_size=[14, 14]), 'as_base_size must be'),
            (dict(frozen_stages=5), 'frozen_stages must be in'),
            (dict(num_classes=10, final_norm=False), 'final_norm=True'),
        ]:
            with self.assertRaisesRegex(ValueError, regex):
                PyramidVisionLLaMA(**self.cfg, **kwargs)

    def test_parameter_counts(self):
        """Official counts (docs/pyramid.md#variants): with head and seg / det
        backbone only."""
        expected = dict(
            s=(25.9, 25.4), b=(56.0, 55.3), l=(104.7, 103.7))  # noqa: E741
        for arch, (with_head, backbone) in expected.items():
            with torch.device('meta'):
                cls = PyramidVisionLLaMA(arch, num_classes=1000)
                det = PyramidVisionLLaMADET(arch)
            self.assertEqual(round(count(cls) / 1e6, 1), with_head)
            self.assertEqual(round(count(det) / 1e6, 1), backbone)
            self.assertIsNone(det.norm)
            self.assertIsNone(det.head)
            self.assertEqual(len(det.norm_list), 4)

    def test_structure(self):
        model = PyramidVisionLLaMA(
            'small', drop_path_rate=0.2, num_classes=1000)
        blocks = [b for stage in model.blocks for b in stage]
        self.assertEqual(len(blocks), 18)
        rates = [b.drop_path.drop_prob for b in blocks]
        for got, want in zip(rates, torch.linspace(0, 0.2, 18).tolist()):
            self.assertAlmostEqual(got, want, places=6)
        hidden = {64: 256, 128: 512, 256: 768, 512: 1536}
        for k, stage in enumerate(model.blocks):
            dim = model.embed_dims[k]
            for j, block in enumerate(stage):
                attn = block.attn
                if j % 2 == 0:
                    self.assertIsInstance(attn, GroupAttention)
                    self.assertEqual(attn.window_size, 7)
                else:
                    self.assertIsInstance(attn, GSAttention)
                    self.assertEqual(attn.sr_ratio, [8, 4, 2, 1][k])
                    self.assertEqual(hasattr(attn, 'sr'), k < 3)
                    self.assertEqual(hasattr(attn, 'norm'), k < 3)
                self.assertEqual(attn.head_dim, 32)
                self.assertEqual(block.mlp.hidden_features, hidden[dim])
                self.assertIsNone(block.mlp.c_fc1.bias)
                torch.testing.assert_close(block.gamma_1,
                                           torch.full((dim, ), 1e-4))
                self.assertEqual(block.norm1.eps, 1e-5)
        self.assertEqual(model.patch_embeds[0].proj.kernel_size, (4, 4))
        self.assertEqual(model.patch_embeds[1].proj.stride, (2, 2))
        self.assertEqual(model.patch_embeds[0].norm.eps, 1e-5)
        # no class token, position embedding or CPE; no RoPE in the weights
        names = set(model.state_dict())
        self.assertFalse(
            [n for n in names if 'pos' in n or 'cls' in n or 'rope' in n])
        self.assertIn('head.weight', names)
        self.assertIn('norm.weight', names)
        self.assertIn('blocks.0.1.attn.sr.weight', names)
        self.assertIn('blocks.3.1.attn.kv.weight', names)

    def test_blocks_read_their_attention_kind(self):
        """The tables a block gets, the stage's GSA tables and the input
        size check follow the block's attention module, not its index."""
        model = PyramidVisionLLaMADET(**self.cfg)
        calls = []
        for stage in model.blocks:
            for block in stage:
                block.register_forward_pre_hook(
                    lambda m, args, kwargs: calls.append(
                        (m.attn.kind,
                         sorted(k for k in kwargs if k.startswith('rope')))),
                    with_kwargs=True)
        model(torch.randn(1, 3, 64, 64))
        self.assertEqual(calls, [('lsa', ['rope']),
                                 ('gsa', ['rope_k', 'rope_q'])] * 4)
        # a last stage of one (LSA) block needs no sr_ratio x sr_ratio grid
        arch = dict(copy.deepcopy(TINY), depths=[2, 2, 2, 1])
        arch['sr_ratios'] = [8, 4, 2, 4]
        short = PyramidVisionLLaMADET(arch)
        self.assertEqual(short.min_input_size, 32)
        self.assertEqual(
            short(torch.randn(1, 3, 64, 64))[3].shape[-2:], (2, 2))
        # stage 3 (sr 1) with LSA in both blocks: no GSA tables, LSA tables
        # for its second block, still runs
        model.blocks[3][1].attn = GroupAttention(128, 4, window_size=7)
        self.assertNotIn('gsa_q', model.stage_tables(3, (2, 2), CPU))
        calls.clear()
        model(torch.randn(1, 3, 64, 64))
        self.assertEqual(calls[-2:], [('lsa', ['rope'])] * 2)

    def test_init(self):
        model = PyramidVisionLLaMA(**self.cfg, num_classes=5)
        model.init_weights()
        conv = model.patch_embeds[0].proj
        fan_out = 4 * 4 * 32
        std = conv.weight.std().item()
        self.assertAlmostEqual(std, math.sqrt(2 / fan_out), delta=0.02)
        self.assertEqual(conv.bias.abs().sum().item(), 0)
        lin = model.blocks[2][0].attn.qkv
        # timm-style trunc_normal(std=.02) truncates at +-2 (absolute)
        self.assertAlmostEqual(lin.weight.std().item(), 0.02, delta=0.002)
        self.assertEqual(lin.bias.abs().sum().item(), 0)

    def test_forward_out_types(self):
        x = torch.randn(2, 3, 64, 64)
        model = PyramidVisionLLaMA(**self.cfg)
        outs = model(x)
        self.assertIsInstance(outs, tuple)
        self.assertEqual(len(outs), 1)
        self.assertEqual(outs[0].shape, (2, 128))

        model = PyramidVisionLLaMA(
            **self.cfg, out_type='featmap', out_indices=(0, 1, 2, 3))
        outs = model(x)
        shapes = [o.shape for o in outs]
        self.assertEqual(shapes, [(2, 32, 16, 16), (2, 64, 8, 8),
                                  (2, 96, 4, 4), (2, 128, 2, 2)])
        # contiguous NCHW, not a channels-last view: mmcv's RoIAlign reads
        # raw NCHW memory (a channels-last FPN input scrambles RoI features)
        for out in outs:
            self.assertTrue(out.is_contiguous())

        model = PyramidVisionLLaMA(
            **self.cfg, out_type='raw', out_indices=(1, -1))
        shapes = [o.shape for o in model(x)]
        self.assertEqual(shapes, [(2, 64, 64), (2, 4, 128)])

        model = PyramidVisionLLaMA(
            **self.cfg, out_type='avg_featmap', out_indices=(0, 3))
        shapes = [o.shape for o in model(x)]
        self.assertEqual(shapes, [(2, 32), (2, 128)])

    def test_classifier_face(self):
        """avg_featmap = norm(mean(norm(x))) = forward_head(pre_logits)."""
        torch.manual_seed(0)
        x = torch.randn(2, 3, 64, 96)
        for double in (True, False):
            model = PyramidVisionLLaMA(
                **self.cfg, num_classes=7, head_double_norm=double).eval()
            with torch.no_grad():
                model.norm.weight.normal_()
                model.norm.bias.normal_()
                feat = model(x)[0]
                tokens = model.forward_features(x)
                pooled = model.forward_head(tokens, pre_logits=True)
                logits = model.forward_head(tokens)
                raw = PyramidVisionLLaMA(**self.cfg, final_norm=False)
                raw.load_state_dict(model.state_dict(), strict=False)
                z = model.norm(raw.eval().forward_features(x))
            want = model.norm(z.mean(1)) if double else z.mean(1)
            torch.testing.assert_close(feat, want)
            torch.testing.assert_close(pooled, want)
            torch.testing.assert_close(logits, model.head(want))

    def test_dense_face(self):
        model = PyramidVisionLLaMADET(**self.cfg)
        self.assertEqual(model.out_indices, (0, 1, 2, 3))
        self.assertTrue(model.auto_scale)
        self.assertIsNone(model.norm)
        x = torch.randn(1, 3, 96, 128)
        outs = model(x)
        self.assertEqual([o.shape for o in outs], [(1, 32, 24, 32),
                                                   (1, 64, 12, 16),
                                                   (1, 96, 6, 8),
                                                   (1, 128, 3, 4)])
        # every output is the normalised map (fresh LN: zero mean, unit var)
        for o in outs:
            torch.testing.assert_close(
                o.mean(1), torch.zeros_like(o.mean(1)), atol=1e-5, rtol=0)

    def test_any_input_size(self):
        """Non-square, not divisible by the window or the GSA ratio."""
        model = PyramidVisionLLaMADET(**self.cfg, auto_scale=False)
        for h, w in [(123, 77), (65, 200), (33, 45)]:
            outs = model(torch.randn(1, 3, h, w))
            hs, ws = h // 4, w // 4
            for k, o in enumerate(outs):
                self.assertEqual(o.shape[-2:], (hs, ws))
                self.assertTrue(torch.isfinite(o).all())
                hs, ws = hs // 2, ws // 2
        model.eval()
        with torch.no_grad():
            model.mask_window_padding = True
            for block in model.modules():
                if isinstance(block, GroupAttention):
                    block.mask_window_padding = True
            outs = model(torch.randn(1, 3, 123, 77))
        self.assertTrue(all(torch.isfinite(o).all() for o in outs))

    def test_swapped_hw_tables(self):
        """Same token count, swapped H / W: own, fresh-equal tables
        (docs/pyramid.md#global-sub-sampled-attention-gsa)."""
        torch.manual_seed(0)
        for key_pos in ('official', 'centroid'):
            model = PyramidVisionLLaMADET(
                **self.cfg, gsa_key_pos=key_pos).eval()
            fresh = copy.deepcopy(model)
            a, b = torch.randn(1, 3, 64, 128), torch.randn(1, 3, 128, 64)
            with torch.no_grad():
                model(a)  # fills the caches with the (H, W) tables
                out_b = model(b)
                for stage in fresh.ropes:
                    stage._cache.clear()
                want_b = fresh(b)
            for got, want in zip(out_b, want_b):
                torch.testing.assert_close(got, want, atol=0, rtol=0)
            # tables of both shapes equal tables computed from scratch
            for k in range(4):
                for hw in ((16 >> k, 32 >> k), (32 >> k, 16 >> k)):
                    tables = model.stage_tables(k, hw, torch.device('cpu'))
                    self._check_tables(k, hw, tables, key_pos, model)
            # and the swapped shapes really have different key tables
            t1 = model.stage_tables(1, (16, 32), torch.device('cpu'))
            t2 = model.stage_tables(1, (32, 16), torch.device('cpu'))
            self.assertEqual(t1['gsa_k'][0].shape, t2['gsa_k'][0].shape)
            self.assertFalse(torch.equal(t1['gsa_k'][0], t2['gsa_k'][0]))
            self.assertFalse(torch.equal(t1['gsa_q'][0], t2['gsa_q'][0]))

    def _check_tables(self, k, hw, tables, key_pos, model):
        H, W = hw
        s = model.sr_ratios[k]
        sigma = 14 / H  # auto_scale, anchor 14, 'height'
        fresh = RotaryEmbedding2D(32)
        n = torch.arange(H * W, dtype=torch.float32)
        q = torch.stack([n % W, torch.div(n, W, rounding_mode='floor')], -1)
        if key_pos == 'official':
            j = torch.arange((H // s) * (W // s), dtype=torch.float32)
            row, off = W, 1 - 1 / s
        else:
            j = torch.arange((H // s) * (W // s), dtype=torch.float32)
            row, off = W // s, (s - 1) / 2
        key = torch.stack([(j % row) * s + off,
                           torch.div(j, row, rounding_mode='floor') * s + off],
                          -1)
        for name, coords in (('gsa_q', q * sigma), ('gsa_k', key * sigma),
                             ('lsa', grid_coords(7, 7))):
            cos, sin = fresh.tables(coords)
            torch.testing.assert_close(tables[name][0], cos)
            torch.testing.assert_close(tables[name][1], sin)

    def test_auto_scale(self):
        """AS2DRoPE: sigma = base / H_stage on GSA q / k only
        (docs/pyramid.md#as2drope-in-the-pyramid)."""
        model = PyramidVisionLLaMA(
            **self.cfg, auto_scale=True, as_base_size=[56, 28, 14, 7])
        dev = torch.device('cpu')
        for k, hw in enumerate([(56, 56), (28, 28), (14, 14), (7, 7)]):
            plain = PyramidVisionLLaMA(**self.cfg).stage_tables(k, hw, dev)
            scaled = model.stage_tables(k, hw, dev)
            for name in ('lsa', 'gsa_q', 'gsa_k'):
                torch.testing.assert_close(scaled[name], plain[name])
        # the official anchor 14 at 512 px: sigma = 14 / 128 in stage 1
        model = PyramidVisionLLaMA(**self.cfg, auto_scale=True)
        scaled = model.stage_tables(0, (128, 128), dev)
        fresh = RotaryEmbedding2D(32)
        cos, _ = fresh.tables(grid_coords(128, 128) * (14 / 128))
        torch.testing.assert_close(scaled['gsa_q'][0], cos)
        cos, _ = fresh.tables(grid_coords(7, 7))
        torch.testing.assert_close(scaled['lsa'][0], cos)
        # 'per_axis' scales x by base / W
        model = PyramidVisionLLaMA(
            **self.cfg, auto_scale=True, anchor_mode='per_axis')
        scaled = model.stage_tables(0, (16, 32), dev)
        coords = grid_coords(16, 32) * torch.tensor([14 / 32, 14 / 16])
        torch.testing.assert_close(scaled['gsa_q'][0], fresh.tables(coords)[0])

    def test_fused_matches_manual(self):
        torch.manual_seed(0)
        x = torch.randn(2, 3, 96, 80)
        model = PyramidVisionLLaMADET(
            **self.cfg, mask_window_padding=True).eval()
        with torch.no_grad():
            set_fused(model, True)
            fused = model(x)
            set_fused(model, False)
            manual = model(x)
        for a, b in zip(fused, manual):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    def test_bf16_autocast(self):
        """RoPE stays fp32 under autocast; bf16 close to fp32."""
        torch.manual_seed(0)
        x = torch.randn(1, 3, 64, 64)
        model = PyramidVisionLLaMADET(**self.cfg).eval()
        with torch.no_grad():
            ref = model(x)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                low = model(x)
        for a, b in zip(low, ref):
            self.assertTrue(torch.isfinite(a).all())
            torch.testing.assert_close(a.float(), b, atol=0.1, rtol=0.1)

    def test_window_padding_mask(self):
        """Masked LSA on a grid smaller than one window = full attention."""
        torch.manual_seed(0)
        dim, heads, H, W = 64, 2, 5, 3
        lsa = GroupAttention(dim, heads, mask_window_padding=True).eval()
        full = RoPEAttention(dim, heads).eval()
        full.load_state_dict(lsa.state_dict())
        rope = RotaryEmbedding2D(32)
        x = torch.randn(2, H * W, dim)
        with torch.no_grad():
            got = lsa(x, (H, W), rope.grid(7, 7))
            want = full(x, rope=rope.grid(H, W))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            lsa.mask_window_padding = False  # official: padding attended
            self.assertFalse(
                torch.allclose(lsa(x, (H, W), rope.grid(7, 7)), want))

    def test_backward_all_params(self):
        for cls, kwargs in ((PyramidVisionLLaMA, dict(num_classes=3)),
                            (PyramidVisionLLaMADET, {})):
            model = cls(**self.cfg, drop_path_rate=0.1, **kwargs).train()
            x = torch.randn(2, 3, 64, 64)
            with torch.autograd.set_detect_anomaly(True):
                if kwargs:
                    loss = model.forward_head(model.forward_features(x)).sum()
                else:
                    loss = sum(o.sum() for o in model(x))
                loss.backward()
            for name, p in model.named_parameters():
                self.assertIsNotNone(p.grad, name)
                self.assertTrue(torch.isfinite(p.grad).all(), name)

    def test_grad_checkpointing(self):
        torch.manual_seed(0)
        x = torch.randn(1, 3, 64, 64)
        model = PyramidVisionLLaMADET(**self.cfg)
        ref = copy.deepcopy(model)
        model.set_grad_checkpointing(True)
        self.assertTrue(model.with_cp)
        sum(o.sum() for o in model(x)).backward()
        sum(o.sum() for o in ref(x)).backward()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=name)

    def test_frozen_stages(self):
        model = PyramidVisionLLaMADET(**self.cfg, frozen_stages=2)
        model.train()
        for k in range(4):
            frozen = k < 2
            for m in (model.patch_embeds[k], model.blocks[k],
                      model.norm_list[k]):
                self.assertEqual(m.training, not frozen)
                for p in m.parameters():
                    self.assertEqual(p.requires_grad, not frozen)
        model = PyramidVisionLLaMA(**self.cfg, frozen_stages=0)
        self.assertFalse(model.patch_embeds[0].proj.weight.requires_grad)
        self.assertTrue(model.blocks[0][0].norm1.weight.requires_grad)
        model = PyramidVisionLLaMA(**self.cfg, frozen_stages=4)
        self.assertFalse(any(p.requires_grad for p in model.parameters()))

    def test_get_layer_depth(self):
        model = PyramidVisionLLaMADET(**self.cfg)  # depths 2, 2, 2, 2
        cases = {
            'backbone.patch_embeds.0.proj.weight': 0,
            'backbone.blocks.0.0.norm1.weight': 1,
            'backbone.blocks.0.1.attn.kv.weight': 2,
            'backbone.patch_embeds.1.norm.bias': 3,
            'backbone.blocks.1.0.gamma_1': 3,
            'backbone.blocks.2.1.mlp.c_proj.weight': 6,
            'backbone.patch_embeds.3.proj.weight': 7,
            'backbone.blocks.3.1.attn.q.bias': 8,
            'backbone.norm_list.0.weight': 9,
            'decode_head.conv_seg.weight': 9,
        }
        for name, depth in cases.items():
            self.assertEqual(model.get_layer_depth(name), (depth, 10), name)
        self.assertEqual(
            model.get_layer_depth('blocks.0.0.gamma_1', prefix=''), (1, 10))
        # every parameter has a depth
        for name, _ in model.named_parameters():
            depth, total = model.get_layer_depth('backbone.' + name)
            self.assertTrue(0 <= depth < total)

    def test_load_hook_drops_classifier_keys(self):
        cls = PyramidVisionLLaMA(**self.cfg, num_classes=4)
        det = PyramidVisionLLaMADET(**self.cfg)
        result = det.load_state_dict(cls.state_dict(), strict=False)
        self.assertEqual(result.unexpected_keys, [])
        self.assertEqual(
            sorted(result.missing_keys),
            sorted(f'norm_list.{k}.{n}' for k in range(4)
                   for n in ('weight', 'bias')))
        # a wrapped model sees the hook with its prefix
        wrapper = nn.Module()
        wrapper.backbone = PyramidVisionLLaMADET(**self.cfg)
        state = {'backbone.' + k: v for k, v in cls.state_dict().items()}
        result = wrapper.load_state_dict(state, strict=False)
        self.assertEqual(result.unexpected_keys, [])

    def test_official_parity(self):
        """Official-format weights against the docs reference (both keys)."""
        torch.manual_seed(0)
        sd = ref.arch_state_dict(TINY)
        x = torch.randn(1, 3, 160, 128)  # non-square, padded windows
        for key_pos in ('official', 'centroid'):
            model = PyramidVisionLLaMA(
                TINY, num_classes=10, gsa_key_pos=key_pos).eval()
            model.load_state_dict(sd, strict=True)
            with torch.no_grad():
                got = model.forward_head(model.forward_features(x))
                want = ref.arch_forward(sd, x, TINY, key_pos=key_pos)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        other = ref.arch_forward(sd, x, TINY, key_pos='official')
        self.assertGreater((other - want).abs().max().item(), 1e-3)

    def test_checkpoint_filter_fn(self):
        sd = PyramidVisionLLaMA(**self.cfg, num_classes=3).state_dict()
        sd['some_buffer_freqs'] = 'not a tensor'
        cls = checkpoint_filter_fn(sd)
        self.assertIn('head.fc.weight', cls)
        self.assertIn('backbone.norm.weight', cls)
        self.assertNotIn('backbone.head.weight', cls)
        backbone = checkpoint_filter_fn(sd, 'backbone')
        self.assertFalse([k for k in backbone if 'head' in k])
        self.assertNotIn('backbone.norm.weight', backbone)
        self.assertEqual(
            checkpoint_filter_fn(cls, 'timm').keys(),
            checkpoint_filter_fn(sd, 'timm').keys())
        with self.assertRaisesRegex(ValueError, 'fmt must be one of'):
            checkpoint_filter_fn(sd, 'mmseg')


def test_registry_builds():
    from visionllama_mm.registry import MODELS
    model = MODELS.build(dict(type='PyramidVisionLLaMA', arch=TINY))
    assert isinstance(model, PyramidVisionLLaMA)
    det = MODELS.build(dict(type='PyramidVisionLLaMADET', arch=TINY))
    assert isinstance(det, PyramidVisionLLaMADET)
    assert det.norm_list is not None


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_builds_from_library_registries(scope):
    lib = pytest.importorskip(f'{scope}.registry')
    pytest.importorskip(f'{scope}.models')
    model = lib.MODELS.build(
        dict(
            type='visionllama_mm.PyramidVisionLLaMADET',
            arch=TINY,
            init_cfg=None))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == TINY['embed_dims']

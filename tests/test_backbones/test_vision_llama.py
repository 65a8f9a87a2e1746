"""Tests of the plain mmpretrain-style VisionLLaMA backbone."""
from copy import deepcopy
from unittest import TestCase

import pytest
import torch

from visionllama_mm.backbones import VisionLLaMA
from visionllama_mm.layers.rope import apply_rope
from visionllama_mm.registry import MODELS

TINY = dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64)


class TestVisionLLaMA(TestCase):

    def setUp(self):
        self.cfg = dict(arch=dict(TINY), img_size=32, patch_size=8)

    def test_registry(self):
        model = MODELS.build(dict(type='VisionLLaMA', **self.cfg))
        self.assertIsInstance(model, VisionLLaMA)

    def test_arch_zoo_follows_mmpretrain_vit(self):
        # names and shapes are mmpretrain's VisionTransformer's, so an
        # mmpretrain ViT config ports by changing the type only
        from mmpretrain.models.backbones import VisionTransformer
        for name, arch in VisionLLaMA.arch_zoo.items():
            self.assertIn(name, VisionTransformer.arch_zoo)
            vit = VisionTransformer.arch_zoo[name]
            self.assertEqual(arch, {k: vit[k] for k in arch}, name)

    def test_invalid_args(self):
        with self.assertRaisesRegex(ValueError, 'arch must be one of'):
            VisionLLaMA(arch='unknown')
        with self.assertRaisesRegex(ValueError, 'custom arch'):
            VisionLLaMA(arch=dict(embed_dims=32, num_layers=2))
        with self.assertRaisesRegex(ValueError, 'out_type must be one of'):
            VisionLLaMA(**self.cfg, out_type='tokens')
        with self.assertRaisesRegex(ValueError, 'with_cls_token=True'):
            VisionLLaMA(**self.cfg, out_type='cls_token')
        with self.assertRaisesRegex(ValueError, 'out_indices'):
            VisionLLaMA(**self.cfg, out_indices=3)
        with self.assertRaisesRegex(ValueError, 'out_indices'):
            VisionLLaMA(**self.cfg, out_indices=[-4])
        with self.assertRaisesRegex(ValueError, 'ffn_hidden_rule'):
            VisionLLaMA(**self.cfg, ffn_hidden_rule='gpt')
        with self.assertRaisesRegex(ValueError, 'anchor_mode'):
            VisionLLaMA(**self.cfg, anchor_mode='width')
        with self.assertRaisesRegex(ValueError, 'norm_cfg'):
            VisionLLaMA(**self.cfg, norm_cfg=dict(type='BN'))

    def test_invalid_inputs(self):
        model = VisionLLaMA(**self.cfg)
        with self.assertRaisesRegex(ValueError, 'divisible by patch_size=8'):
            model(torch.randn(1, 3, 30, 32))
        with self.assertRaisesRegex(ValueError, 'in_channels=3'):
            model(torch.randn(1, 1, 32, 32))
        with self.assertRaisesRegex(ValueError, r'\(B, C, H, W\)'):
            model(torch.randn(3, 32, 32))

    def test_ffn_hidden_rule(self):
        model = VisionLLaMA(arch='deit-s')
        self.assertEqual(model.layers[0].ffn.w3.in_features, 4096)
        model = VisionLLaMA(arch='deit-s', ffn_hidden_rule='llama')
        self.assertEqual(model.layers[0].ffn.w3.in_features, 1024)

    def test_structure_and_drop_path(self):
        model = VisionLLaMA(**self.cfg, drop_path_rate=0.2)
        rates = [layer.drop_path.drop_prob for layer in model.layers]
        self.assertEqual(rates, pytest.approx([0., 0.1, 0.2]))
        ffn_rates = [layer.ffn_drop_path.drop_prob for layer in model.layers]
        self.assertEqual(ffn_rates, [0., 0., 0.])
        model = VisionLLaMA(**self.cfg, drop_path_rate=0.2, ffn_drop_path=True)
        self.assertEqual(model.layers[2].ffn_drop_path.drop_prob,
                         pytest.approx(0.2))
        # no position embedding, no RoPE state
        names = set(model.state_dict())
        self.assertFalse(any('pos_embed' in n for n in names))
        self.assertIn('patch_embed.projection.weight', names)
        self.assertIn('layers.0.ffn.w12.weight', names)
        self.assertIn('ln1.weight', names)
        self.assertIn('ln2.weight', names)

    def test_out_types(self):
        x = torch.randn(2, 3, 32, 48)  # non-square: 4 x 6 tokens
        for with_cls in (False, True):
            cfg = deepcopy(self.cfg)
            extra = int(with_cls)
            model = VisionLLaMA(**cfg, out_type='raw', with_cls_token=with_cls)
            self.assertEqual(model(x)[0].shape, (2, 24 + extra, 32))
            model = VisionLLaMA(
                **cfg, out_type='featmap', with_cls_token=with_cls)
            featmap = model(x)[0]
            self.assertEqual(featmap.shape, (2, 32, 4, 6))
            # NCHW memory, not a channels-last view (mmcv's RoIAlign reads
            # raw NCHW memory through SimpleFPN's identity level)
            self.assertTrue(featmap.is_contiguous())
            model = VisionLLaMA(
                **cfg, out_type='avg_featmap', with_cls_token=with_cls)
            self.assertEqual(model(x)[0].shape, (2, 32))
        model = VisionLLaMA(
            **self.cfg, out_type='cls_token', with_cls_token=True)
        self.assertEqual(model(x)[0].shape, (2, 32))

    def test_out_indices_and_final_norm(self):
        x = torch.randn(1, 3, 32, 32)
        model = VisionLLaMA(
            **self.cfg, out_type='raw', out_indices=[0, -2, -1])
        model.eval()
        outs = model(x)
        self.assertIsInstance(outs, tuple)
        self.assertEqual(len(outs), 3)
        # the last output went through ln1, the others did not
        feats = model.forward_features(x)
        torch.testing.assert_close(outs[-1], feats)
        tokens, hw = model.patch_embed(x)
        rope = model._rope_tables(*hw, x.device)
        y = model.layers[0](tokens, rope=rope)
        torch.testing.assert_close(outs[0], y)
        y = model.layers[2](model.layers[1](y, rope=rope), rope=rope)
        torch.testing.assert_close(outs[2], model.ln1(y))
        model = VisionLLaMA(**self.cfg, out_type='raw', final_norm=False)
        self.assertFalse(hasattr(model, 'ln1'))

    def test_rope_follows_input_size(self):
        model = VisionLLaMA(**self.cfg, out_type='raw').eval()
        # Reference: block 0 by hand with rope tables of a 3 x 5 grid.
        x = torch.randn(1, 3, 24, 40)
        tokens, hw = model.patch_embed(x)
        self.assertEqual(hw, (3, 5))
        cos, sin = model._rope_tables(3, 5, x.device)
        self.assertEqual(cos.shape, (15, 16))
        # token n = (x, y) = (n % 5, n // 5): channel pair 0 rotates by x
        n = torch.arange(15)
        torch.testing.assert_close(cos[:, 0], (n % 5).float().cos())
        torch.testing.assert_close(cos[:, 2], (n // 5).float().cos())
        blk = model.layers[0]
        h = blk.ln1(tokens)
        B, N, C = h.shape
        qkv = blk.attn.qkv(h).reshape(B, N, 3, 2, 16).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = (q @ k.transpose(-2, -1) * 16**-0.5).softmax(-1)
        a = blk.attn.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        h = tokens + a
        ref = h + blk.ffn(blk.ln2(h))
        torch.testing.assert_close(
            blk(tokens, rope=(cos, sin)), ref, atol=1e-5, rtol=1e-5)

    def test_as_anchor(self):
        model = VisionLLaMA(**self.cfg, out_type='raw', as_anchor=4)
        cos, _ = model._rope_tables(8, 8, torch.device('cpu'))
        # 8 rows anchored to 4: positions are halved, token 1 is x = 0.5
        self.assertAlmostEqual(cos[1, 0].item(), torch.tensor(0.5).cos(), 6)
        ref = VisionLLaMA(**self.cfg, out_type='raw')
        ref.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 32, 32)  # 4 x 4 tokens = anchor: identical
        torch.testing.assert_close(model(x)[0], ref(x)[0])
        x = torch.randn(1, 3, 64, 64)
        self.assertFalse(torch.allclose(model(x)[0], ref(x)[0]))

    def test_cls_token_not_rotated(self):
        model = VisionLLaMA(
            **self.cfg, out_type='raw', with_cls_token=True).eval()
        x = torch.randn(2, 3, 32, 32)
        out = model(x)[0]
        self.assertEqual(out.shape, (2, 17, 32))
        # an unrotated class token == a class token at position (0, 0)
        cos, sin = model._rope_tables(4, 4, x.device)
        cos0 = torch.cat([torch.ones(1, 16), cos])
        sin0 = torch.cat([torch.zeros(1, 16), sin])
        h = model._embed(x)[0]
        for layer in model.layers:
            h = layer(h, rope=(cos0, sin0))
        torch.testing.assert_close(out, model.ln1(h))

    def test_frozen_stages(self):
        model = VisionLLaMA(**self.cfg, frozen_stages=2, with_cls_token=True)
        model.train()
        self.assertFalse(model.cls_token.requires_grad)
        for p in model.patch_embed.parameters():
            self.assertFalse(p.requires_grad)
        for i, layer in enumerate(model.layers):
            self.assertEqual(layer.training, i >= 2)
            for p in layer.parameters():
                self.assertEqual(p.requires_grad, i >= 2)
        self.assertTrue(model.ln2.weight.requires_grad)
        model = VisionLLaMA(**self.cfg, frozen_stages=3)
        self.assertFalse(model.ln1.weight.requires_grad)
        self.assertFalse(model.ln2.weight.requires_grad)

    def test_get_layer_depth(self):
        model = VisionLLaMA(**self.cfg, with_cls_token=True)
        self.assertEqual(model.get_layer_depth('backbone.cls_token'), (0, 5))
        self.assertEqual(
            model.get_layer_depth('backbone.patch_embed.projection.weight'),
            (0, 5))
        self.assertEqual(
            model.get_layer_depth('backbone.layers.1.attn.qkv.weight'), (2, 5))
        self.assertEqual(model.get_layer_depth('backbone.ln2.weight'), (4, 5))
        self.assertEqual(model.get_layer_depth('head.fc.weight'), (4, 5))
        self.assertEqual(
            model.get_layer_depth('layers.0.ln1.weight', prefix=''), (1, 5))

    def test_grad_checkpointing_and_backward(self):
        x = torch.randn(2, 3, 32, 32)
        model = VisionLLaMA(**self.cfg, with_cls_token=True)
        ref = deepcopy(model)
        model.set_grad_checkpointing()
        out, out_ref = model(x)[0], ref(x)[0]
        torch.testing.assert_close(out, out_ref)
        out.sum().backward()
        out_ref.sum().backward()
        for (name, p), p_ref in zip(model.named_parameters(),
                                    ref.parameters()):
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)
            torch.testing.assert_close(p.grad, p_ref.grad)

    def test_inference_mode_then_training(self):
        model = VisionLLaMA(**self.cfg)
        x = torch.randn(1, 3, 32, 32)
        with torch.inference_mode():
            model(x)
        model(x)[0].sum().backward()  # no stale inference-mode RoPE table
        self.assertIsNotNone(model.layers[0].attn.qkv.weight.grad)

    def test_init(self):
        model = VisionLLaMA(**self.cfg)
        model.init_weights()
        w12 = model.layers[0].ffn.w12
        bound = (6 / (w12.in_features + w12.out_features))**0.5
        self.assertLessEqual(w12.weight.abs().max().item(), bound)
        self.assertLess(w12.bias.abs().max().item(), 1e-4)

    def test_load_hook_drops_pos_embed(self):
        src = VisionLLaMA(**self.cfg, with_cls_token=True)
        sd = {'backbone.' + k: v for k, v in src.state_dict().items()}
        sd['backbone.pos_embed'] = torch.zeros(1, 17, 32)

        class Wrapper(torch.nn.Module):

            def __init__(self, backbone):
                super().__init__()
                self.backbone = backbone

        # with a class token: only pos_embed is dropped
        dst = Wrapper(VisionLLaMA(**self.cfg, with_cls_token=True))
        dst.load_state_dict(dict(sd), strict=True)
        torch.testing.assert_close(dst.backbone.cls_token,
                                   src.cls_token.detach())
        # without one: the MAE class token is dropped as well
        dst = Wrapper(VisionLLaMA(**self.cfg))
        dst.load_state_dict(dict(sd), strict=True)
        # other mismatches are still reported by name
        sd.pop('backbone.ln1.weight')
        with self.assertRaisesRegex(RuntimeError, 'backbone.ln1.weight'):
            dst.load_state_dict(dict(sd), strict=True)

"""Tests of the deit-style plain VisionLLaMA (VisionLLaMADeiT)."""
from copy import deepcopy
from unittest import TestCase

import torch

from visionllama_mm.backbones import VisionLLaMADeiT
from visionllama_mm.layers.rope import RotaryEmbedding2D
from visionllama_mm.registry import MODELS

TINY = dict(embed_dims=32, num_layers=2, num_heads=2)


class TestVisionLLaMADeiT(TestCase):

    def setUp(self):
        self.cfg = dict(arch=dict(TINY), patch_size=8)

    def test_build_and_names(self):
        model = MODELS.build(dict(type='VisionLLaMADeiT', **self.cfg))
        names = set(model.state_dict())
        for key in ('patch_embed.proj.weight', 'cls_token', 'norm.weight',
                    'blocks.0.norm1.weight', 'blocks.0.attn.qkv.bias',
                    'blocks.0.attn.proj.weight', 'blocks.0.gamma_1',
                    'blocks.0.gamma_2', 'blocks.0.norm2.weight',
                    'blocks.0.mlp.c_fc1.weight', 'blocks.0.mlp.c_fc2.weight',
                    'blocks.0.mlp.c_proj.weight'):
            self.assertIn(key, names)
        self.assertNotIn('blocks.0.mlp.c_fc1.bias', names)
        self.assertFalse(any('pos_embed' in n for n in names))
        self.assertNotIn('head.weight', names)  # num_classes=0
        torch.testing.assert_close(model.blocks[1].gamma_2,
                                   torch.full((32, ), 1e-4))

    def test_invalid_args(self):
        with self.assertRaisesRegex(ValueError, 'arch must be one of'):
            VisionLLaMADeiT(arch='huge')
        with self.assertRaisesRegex(ValueError, 'out_type must be one of'):
            VisionLLaMADeiT(**self.cfg, out_type='gap')
        with self.assertRaisesRegex(ValueError, 'cls_rope_pos'):
            VisionLLaMADeiT(**self.cfg, cls_rope_pos='first')
        with self.assertRaisesRegex(ValueError, 'out_indices'):
            VisionLLaMADeiT(**self.cfg, out_indices=2)
        model = VisionLLaMADeiT(**self.cfg)
        with self.assertRaisesRegex(ValueError, 'patch_size=8'):
            model(torch.randn(1, 3, 20, 16))

    def test_uniform_drop_path(self):
        model = VisionLLaMADeiT(**self.cfg, drop_path_rate=0.3)
        self.assertEqual([b.drop_path.drop_prob for b in model.blocks],
                         [0.3, 0.3])

    def test_outputs(self):
        x = torch.randn(2, 3, 16, 32)
        model = VisionLLaMADeiT(**self.cfg, num_classes=7).eval()
        feats = model.forward_features(x)
        self.assertEqual(feats.shape, (2, 9, 32))
        self.assertEqual(model.forward_head(feats).shape, (2, 7))
        torch.testing.assert_close(model(x)[0], feats[:, 0])
        for out_type, shape in [('raw', (2, 9, 32)),
                                ('featmap', (2, 32, 2, 4)),
                                ('avg_featmap', (2, 32))]:
            m = VisionLLaMADeiT(**self.cfg, out_type=out_type)
            self.assertEqual(m(x)[0].shape, shape)
            self.assertTrue(m(x)[0].is_contiguous())  # NCHW memory
        m = VisionLLaMADeiT(**self.cfg, out_indices=[0, 1])
        self.assertEqual(len(m(x)), 2)

    def test_cls_rope_positions(self):
        model = VisionLLaMADeiT(**self.cfg)
        cos, sin = model._rope_tables(2, 4, torch.device('cpu'))
        self.assertEqual(cos.shape, (9, 16))
        # official: flat index -1 -> (x, y) = (W - 1, -1) = (3, -1)
        ref_cos, _ = RotaryEmbedding2D(16).tables(torch.tensor([[3., -1.]]))
        torch.testing.assert_close(cos[:1], ref_cos)
        model = VisionLLaMADeiT(**self.cfg, cls_rope_pos=0.5)
        cos, _ = model._rope_tables(2, 4, torch.device('cpu'))
        torch.testing.assert_close(cos[0, 0], torch.tensor(0.5).cos())
        # None: class token left unrotated == rotated at the origin
        x = torch.randn(1, 3, 16, 16)
        skip = VisionLLaMADeiT(**self.cfg, cls_rope_pos=None).eval()
        origin = VisionLLaMADeiT(**self.cfg, cls_rope_pos=0.).eval()
        origin.load_state_dict(skip.state_dict())
        torch.testing.assert_close(skip(x)[0], origin(x)[0])
        self.assertFalse(torch.allclose(model.eval()(x)[0], skip(x)[0]))

    def test_as_anchor(self):
        # the AS variant scales all coordinates (class token too) by
        # anchor / H_tokens = 224 / H_pixels at patch 16
        model = VisionLLaMADeiT(**self.cfg, as_anchor=2)
        cos, _ = model._rope_tables(4, 4, torch.device('cpu'))
        coords = torch.tensor([[3., -1.], [0., 0.], [1., 0.]]) * 0.5
        ref_cos, _ = RotaryEmbedding2D(16).tables(coords)
        torch.testing.assert_close(cos[:3], ref_cos)
        # an explicit class position is set after scaling (upstream cls_pos)
        model = VisionLLaMADeiT(**self.cfg, as_anchor=2, cls_rope_pos=0.5)
        cos, _ = model._rope_tables(4, 4, torch.device('cpu'))
        torch.testing.assert_close(cos[0, 0], torch.tensor(0.5).cos())
        torch.testing.assert_close(cos[2, 0], torch.tensor(0.5).cos())

    def test_frozen_and_layer_depth(self):
        model = VisionLLaMADeiT(**self.cfg, frozen_stages=1)
        model.train()
        self.assertFalse(model.cls_token.requires_grad)
        self.assertFalse(model.blocks[0].gamma_1.requires_grad)
        self.assertTrue(model.blocks[1].gamma_1.requires_grad)
        self.assertFalse(model.blocks[0].training)
        self.assertTrue(model.norm.weight.requires_grad)
        self.assertEqual(
            model.get_layer_depth('backbone.patch_embed.proj.weight'), (0, 4))
        self.assertEqual(
            model.get_layer_depth('backbone.blocks.1.gamma_1'), (2, 4))
        self.assertEqual(model.get_layer_depth('backbone.norm.bias'), (3, 4))
        self.assertEqual(model.get_layer_depth('head.fc.bias'), (3, 4))

    def test_backward_and_checkpointing(self):
        x = torch.randn(2, 3, 16, 16)
        model = VisionLLaMADeiT(**self.cfg, num_classes=3)
        ref = deepcopy(model)
        model.set_grad_checkpointing()
        out = model.forward_head(model.forward_features(x))
        out_ref = ref.forward_head(ref.forward_features(x))
        torch.testing.assert_close(out, out_ref)
        out.sum().backward()
        out_ref.sum().backward()
        for (name, p), p_ref in zip(model.named_parameters(),
                                    ref.parameters()):
            self.assertIsNotNone(p.grad, name)
            torch.testing.assert_close(p.grad, p_ref.grad)

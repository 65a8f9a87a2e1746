"""LayerDecayOptimWrapperConstructor: lr / weight decay of named params."""
import unittest

import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

from visionllama_mm.backbones import PyramidVisionLLaMADET, VisionLLaMA
from visionllama_mm.engine import LayerDecayOptimWrapperConstructor
from visionllama_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

LR, WD = 1e-4, 0.05


class Detector(nn.Module):
    """A model in the mmseg / mmdet shape: ``backbone`` + heads."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4))


def groups_by_name(optim_wrapper, model):
    """{param name: (lr, weight_decay)} of the built optimizer."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            out[names[id(p)]] = (group['lr'], group['weight_decay'])
    return out


def build(model, **paramwise_cfg):
    cfg = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        constructor='visionllama_mm.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=paramwise_cfg)
    return build_optim_wrapper(model, cfg)


class TestLayerDecay(unittest.TestCase):

    def setUp(self):
        # a narrow 12-layer plain backbone: max id 13 like VisionLLaMA-B
        arch = dict(embed_dims=8, num_layers=12, num_heads=2)
        self.model = Detector(
            VisionLLaMA(arch=arch, out_type='featmap', final_norm=False))

    def test_registered(self):
        self.assertIs(
            OPTIM_WRAPPER_CONSTRUCTORS.get(
                'LayerDecayOptimWrapperConstructor'),
            LayerDecayOptimWrapperConstructor)

    def test_plain_lr_and_decay(self):
        rate = 0.65
        got = groups_by_name(
            build(self.model, layer_decay_rate=rate, num_layers=12),
            self.model)
        params = dict(self.model.named_parameters())
        self.assertEqual(set(got), set(params))
        # docs/visionllama.md#layer-wise-lr-decay: patch embed rate^13, layer i
        # rate^(12 - i), heads 1
        expect_scale = {
            'backbone.patch_embed.projection.weight': rate**13,
            'backbone.patch_embed.projection.bias': rate**13,
            'backbone.layers.0.attn.qkv.weight': rate**12,
            'backbone.layers.5.ffn.w12.weight': rate**7,
            'backbone.layers.11.ln2.weight': rate**1,
            'neck.weight': 1.,
            'head.0.weight': 1.,
        }
        for name, scale in expect_scale.items():
            self.assertAlmostEqual(got[name][0], LR * scale, msg=name)
        for name, p in params.items():
            no_decay = p.ndim == 1 or name.endswith('.bias')
            self.assertEqual(got[name][1], 0. if no_decay else WD, name)
            depth, max_id = self.model.backbone.get_layer_depth(name)
            self.assertEqual(max_id, 14)
            self.assertAlmostEqual(got[name][0], LR * rate**(13 - depth))

    def test_pyramid_lr(self):
        """Blocks in global order; stage-k patch embed at its first block."""
        arch = dict(
            embed_dims=[8, 16, 24, 32],
            depths=[2, 2, 3, 1],
            num_heads=[1, 1, 1, 1],
            window_sizes=[7] * 4,
            sr_ratios=[8, 4, 2, 1])
        model = Detector(PyramidVisionLLaMADET(arch))
        rate = 0.8
        got = groups_by_name(
            build(model, layer_decay_rate=rate, num_layers=8), model)
        # 8 blocks -> depths 0 .. 9, lr scale rate ** (9 - depth)
        expect_depth = {
            'backbone.patch_embeds.0.proj.weight': 0,
            'backbone.blocks.0.0.attn.qkv.weight': 1,
            'backbone.blocks.0.1.attn.kv.weight': 2,
            'backbone.patch_embeds.1.proj.weight': 3,
            'backbone.blocks.1.0.mlp.c_fc1.weight': 3,
            'backbone.blocks.2.2.attn.qkv.weight': 7,
            'backbone.patch_embeds.3.norm.weight': 8,
            'backbone.blocks.3.0.gamma_1': 8,
            'backbone.norm_list.0.weight': 9,
            'head.0.weight': 9,
        }
        for name, depth in expect_depth.items():
            self.assertAlmostEqual(
                got[name][0], LR * rate**(9 - depth), msg=name)
        self.assertEqual(got['backbone.blocks.3.0.gamma_1'][1], 0.)
        self.assertEqual(got['backbone.blocks.2.1.attn.sr.weight'][1], WD)
        with self.assertRaisesRegex(ValueError, 'reports 8 layers'):
            build(model, layer_decay_rate=rate, num_layers=12)

    def test_decay_rate_alias_and_custom_keys(self):
        got = groups_by_name(
            build(
                self.model,
                decay_rate=0.7,
                decay_type='layer_wise',
                custom_keys={'head': dict(lr_mult=10., decay_mult=0.)}),
            self.model)
        self.assertAlmostEqual(got['backbone.layers.3.attn.qkv.weight'][0],
                               LR * 0.7**9)
        self.assertAlmostEqual(got['head.0.weight'][0], LR * 10)
        self.assertEqual(got['head.0.weight'][1], 0.)

    def test_mmpretrain_rule(self):
        got = groups_by_name(
            build(
                self.model,
                layer_decay_rate=0.5,
                no_decay_rule='mmpretrain',
                norm_decay_mult=0.,
                bias_decay_mult=0.5), self.model)
        self.assertEqual(got['backbone.layers.0.ln1.weight'][1], 0.)
        self.assertEqual(got['head.1.weight'][1], 0.)  # LayerNorm
        self.assertEqual(got['neck.bias'][1], WD * 0.5)
        self.assertEqual(got['backbone.layers.0.attn.qkv.bias'][1], WD * 0.5)
        self.assertEqual(got['neck.weight'][1], WD)
        got = groups_by_name(
            build(
                self.model, layer_decay_rate=0.5, no_decay_rule='mmpretrain'),
            self.model)
        # without mults every parameter is decayed (mmpretrain semantics)
        self.assertEqual(got['backbone.layers.0.ln1.weight'][1], WD)

    def test_bad_cfg(self):
        with self.assertRaisesRegex(ValueError, 'num_layers=24'):
            build(self.model, layer_decay_rate=0.65, num_layers=24)
        with self.assertRaisesRegex(ValueError, 'decay_type'):
            build(self.model, layer_decay_rate=0.65, decay_type='stage_wise')
        with self.assertRaisesRegex(ValueError, 'no_decay_rule'):
            build(self.model, no_decay_rule='timm')
        with self.assertRaisesRegex(ValueError, 'alias'):
            build(self.model, layer_decay_rate=0.6, decay_rate=0.7)
        with self.assertRaisesRegex(ValueError, 'mmpretrain'):
            build(self.model, norm_decay_mult=0.)
        with self.assertRaisesRegex(NotImplementedError, 'get_layer_depth'):
            build(nn.Linear(2, 2), layer_decay_rate=0.5)

    def test_frozen_params_skipped_and_groups_merged(self):
        self.model.backbone.patch_embed.requires_grad_(False)
        ow = build(self.model, layer_decay_rate=0.65)
        got = groups_by_name(ow, self.model)
        self.assertNotIn('backbone.patch_embed.projection.weight', got)
        # one decay and one no-decay group per depth at most
        self.assertLessEqual(len(ow.optimizer.param_groups), 2 * 14)
        ow.optimizer.zero_grad()
        self.model.backbone(torch.randn(1, 3, 32, 32))[0].sum().backward()
        ow.step()

    def test_logs_table(self):
        from mmengine.logging import MMLogger
        logger = MMLogger.get_instance('test_layer_decay_log')
        with self.assertLogs(logger, level='INFO') as cm:
            build(self.model, layer_decay_rate=0.65)
        text = '\n'.join(cm.output)
        self.assertIn('layer_decay_rate=0.65', text)
        self.assertIn('layer_13_decay', text)


if __name__ == '__main__':
    unittest.main()

"""LLaMADET: window / global blocks against a from-the-docs reference."""
import os.path as osp
import sys
import unittest

import torch

from visionllama_mm.backbones import LLaMADET, VisionLLaMA
from visionllama_mm.registry import MODELS

sys.path.insert(0, osp.dirname(__file__))
from vitdet_reference import backbone_ref, rope_ref  # noqa: E402

TINY = dict(embed_dims=32, num_layers=4, num_heads=2)


class TestLLaMADET(unittest.TestCase):

    def setUp(self):
        torch.manual_seed(0)

    def test_defaults_and_registry(self):
        m = MODELS.build(dict(type='LLaMADET', arch='base'))
        self.assertEqual(m.window_block_indexes, (0, 1, 3, 4, 6, 7, 9, 10))
        self.assertEqual(m.out_type, 'featmap')
        self.assertFalse(m.final_norm)
        self.assertEqual(m.window_size, 14)
        self.assertFalse(m.layers[0].attn.mask_window_padding)
        large = LLaMADET(arch=dict(embed_dims=32, num_layers=24, num_heads=2))
        glob = [i for i in range(24) if not large.is_window_block(i)]
        self.assertEqual(glob, [5, 11, 17, 23])

    def test_same_keys_as_plain(self):
        det = LLaMADET(arch=TINY, window_size=3)
        plain = VisionLLaMA(arch=TINY, final_norm=False, out_type='featmap')
        self.assertEqual(set(det.state_dict()), set(plain.state_dict()))
        self.assertEqual(
            det.get_layer_depth('backbone.layers.2.ffn.w3.weight'), (3, 6))

    def test_bad_args(self):
        with self.assertRaisesRegex(ValueError, 'window_size'):
            LLaMADET(arch=TINY, window_size=0)
        with self.assertRaisesRegex(ValueError, 'window_block_indexes'):
            LLaMADET(arch=TINY, window_block_indexes=[7])
        with self.assertRaisesRegex(ValueError, 'with_cls_token'):
            LLaMADET(arch=TINY, with_cls_token=True)

    def test_all_global_equals_plain(self):
        det = LLaMADET(arch=TINY, window_block_indexes=[]).eval()
        plain = VisionLLaMA(
            arch=TINY, final_norm=False, out_type='featmap').eval()
        plain.load_state_dict(det.state_dict())
        x = torch.randn(1, 3, 64, 112)
        torch.testing.assert_close(det(x)[0], plain(x)[0])

    def _check_against_ref(self, sizes, mask_padding):
        det = LLaMADET(
            arch=TINY,
            window_size=4,
            window_block_indexes=[0, 2],
            mask_window_padding=mask_padding).eval()
        for h, w in sizes:
            img = torch.randn(3, h, w)
            with torch.no_grad():
                out = det(img[None])[0][0]
            self.assertEqual(out.shape, (32, h // 16, w // 16))
            ref = backbone_ref(det, img, mask_padding)
            torch.testing.assert_close(out.double(), ref, atol=2e-4, rtol=2e-4)

    def test_window_and_global_blocks_match_reference(self):
        # 6x10 tokens (window 4 pads to 8x12), then the transposed grid
        # and an exact multiple, in one run (no stale tables).
        self._check_against_ref([(96, 160), (160, 96), (128, 128)], False)

    def test_masked_padding_matches_reference(self):
        self._check_against_ref([(80, 144)], True)

    def test_padding_mask_changes_output(self):
        det = LLaMADET(arch=TINY, window_size=4, window_block_indexes=[0])
        det.eval()
        x = torch.randn(1, 3, 80, 80)  # 5x5 tokens -> padded to 8x8
        ref = det(x)[0]
        for layer in det.layers:
            if hasattr(layer.attn, 'mask_window_padding'):
                layer.attn.mask_window_padding = True
        self.assertFalse(torch.allclose(ref, det(x)[0]))

    def test_global_table_is_runtime_grid(self):
        det = LLaMADET(arch=TINY)
        H, W = 50, 76
        cos, sin = det._rope_tables(H, W, torch.device('cpu'))
        n = torch.arange(H * W, dtype=torch.float64)
        d = det.head_dim
        q = torch.randn(H * W, d, dtype=torch.float64)
        ref = rope_ref(q, n % W, torch.div(n, W, rounding_mode='floor'))
        from visionllama_mm.layers import apply_rope
        got = apply_rope(q[None, None].float(), cos, sin)[0, 0]
        torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)

    def test_backward_and_checkpointing(self):
        det = LLaMADET(
            arch=TINY, window_size=4, drop_path_rate=0.1, with_cp=True)
        out = det(torch.randn(2, 3, 96, 80))[0]
        out.mean().backward()
        for name, p in det.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertTrue(torch.isfinite(p.grad).all(), name)

    def test_loads_mae_style_checkpoint(self):
        import os
        import tempfile
        mae = VisionLLaMA(arch=TINY, with_cls_token=True, final_norm=True)
        sd = {f'backbone.{k}': v for k, v in mae.state_dict().items()}
        sd['backbone.pos_embed'] = torch.zeros(1, 197, 32)
        sd['neck.mask_token'] = torch.zeros(1, 1, 16)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'mae.pth')
            torch.save(dict(state_dict=sd), path)
            det = LLaMADET(
                arch=TINY,
                init_cfg=dict(
                    type='Pretrained', checkpoint=path, prefix='backbone.'))
            det.init_weights()
        for k, v in det.state_dict().items():
            torch.testing.assert_close(v, sd['backbone.' + k], msg=k)


if __name__ == '__main__':
    unittest.main()

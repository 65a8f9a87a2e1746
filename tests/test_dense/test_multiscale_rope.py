"""Multi-scale, non-square detection inputs get exact RoPE tables.

Mask R-CNN 3x multi-scale training feeds e.g. 800x1216 and 1216x800 batches
to the same model one after the other (same token count, swapped grid). The
official code reuses a table keyed on the token count (spec §5.3, §10 #5);
ours must give every batch the tables of its own (H, W). Both the pyramid
(GSA q / k with AS2DRoPE, LSA windows) and LLaMADET (global / window
blocks) are compared with independent references written from the spec.
"""
import os.path as osp
import sys

import torch

from visionllama_mm.backbones import LLaMADET, PyramidVisionLLaMADET

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_backbones'))
sys.path.insert(0, osp.dirname(__file__))
import pyramid_reference  # noqa: E402
from vitdet_reference import backbone_ref  # noqa: E402

SIZES = [(800, 1216), (1216, 800)]


def test_pyramid_multiscale_one_run():
    arch = dict(
        embed_dims=[16, 32, 48, 64],
        depths=[2, 2, 2, 2],
        num_heads=[1, 1, 1, 2],
        window_sizes=[7] * 4,
        sr_ratios=[8, 4, 2, 1])
    sd = pyramid_reference.arch_state_dict(arch)
    sd = {k: v for k, v in sd.items() if not k.startswith(('norm.', 'head.'))}
    model = PyramidVisionLLaMADET(arch).eval()  # auto_scale=True
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith('norm_list') for k in missing)
    torch.manual_seed(0)
    for h, w in SIZES:
        img = torch.randn(1, 3, h, w)
        with torch.no_grad():
            got = model(img)
        want = pyramid_reference.arch_forward(
            sd, img, arch, auto_scale=True, dense=True)
        for k, (g, r) in enumerate(zip(got, want)):
            assert g.shape == (1, arch['embed_dims'][k], h // 4 >> k,
                               w // 4 >> k)
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_llamadet_multiscale_one_run():
    model = LLaMADET(
        arch=dict(embed_dims=16, num_layers=2, num_heads=2),
        window_size=14,
        window_block_indexes=[1]).eval()
    torch.manual_seed(0)
    for h, w in SIZES:
        img = torch.randn(3, h, w)
        with torch.no_grad():
            got = model(img[None])[0][0]
        torch.testing.assert_close(
            got.double(), backbone_ref(model, img), atol=2e-4, rtol=2e-4)

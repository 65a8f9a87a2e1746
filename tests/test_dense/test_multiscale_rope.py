"""Multi-scale, non-square detection inputs get exact RoPE tables.

Mask R-CNN 3x multi-scale training feeds e.g. 800x1216 and 1216x800 batches
to the same model one after the other (same token count, swapped grid). The
official code reuses a table keyed on the token count
(docs/pyramid.md#global-sub-sampled-attention-gsa,
docs/visionllama.md#official-quirks item 5); ours must give every batch the
tables of its own (H, W). Both the pyramid (GSA q / k with AS2DRoPE, LSA
windows) and LLaMADET (global / window blocks) are compared with independent
references written from the docs.
"""
import ast
import math
import os.path as osp
import sys

import torch

from visionllama_mm.backbones import LLaMADET, PyramidVisionLLaMADET
from visionllama_mm.layers.rope import RotaryEmbedding2D, grid_coords

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


def mask_rcnn_shapes():
    """Padded batch shapes of the shipped Mask R-CNN multi-scale recipe.

    ``ms_scales`` are read from the config file (keep-ratio resizes to a
    short side in ``ms_scales`` with the long side <= 1333, padded to 32 by
    the detector's data preprocessor), over aspect ratios 1 .. 2 in both
    orientations.
    """
    cfg = osp.join(
        osp.dirname(__file__), '..', '..', 'configs',
        'mask_rcnn_pyramid_visionllama',
        'mask-rcnn_pyramid-visionllama-s_fpn_amp-ms-crop-3x_coco.py')
    tree = ast.parse(open(cfg).read())
    scales = next(
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == 'ms_scales')
    shapes = set()
    for short, max_long in scales:
        for ratio in torch.linspace(1, 2, 12).tolist():
            long = min(round(short * ratio), max_long)
            h, w = (math.ceil(v / 32) * 32 for v in (short, long))
            shapes.update({(h, w), (w, h)})
    return sorted(shapes)


def test_pyramid_table_memory_is_bounded():
    """Hundreds of input sizes: the RoPE tables held stay bounded."""
    shapes = mask_rcnn_shapes()
    assert len(shapes) > 200
    model = PyramidVisionLLaMADET(
        dict(
            embed_dims=[16, 32, 48, 64],
            depths=[2, 2, 2, 2],
            num_heads=[1, 1, 1, 2],
            window_sizes=[7] * 4,
            sr_ratios=[8, 4, 2, 1]))
    dev = torch.device('cpu')
    held, unbounded = [], 0
    for h, w in shapes:
        hw = (h // 4, w // 4)
        for k in range(4):
            tables = model.stage_tables(k, hw, dev)
            unbounded += sum(t.numel() * 4 for name in ('gsa_q', 'gsa_k')
                             for t in tables[name])
            hw = (hw[0] // 2, hw[1] // 2)
        held.append(sum(r.cache_nbytes() for r in model.ropes))
    # at most cache_size entries per stage, each no larger than the
    # largest input's tables
    h, w = max(shapes, key=lambda s: s[0] * s[1])
    largest = sum(
        RotaryEmbedding2D(r.head_dim).tables(
            grid_coords(h // 4 >> k, w // 4 >> k))[0].numel() * 8
        for k, r in enumerate(model.ropes))
    assert all(len(r._cache) <= r.cache_size for r in model.ropes)
    assert max(held) <= model.ropes[0].cache_size * largest
    assert max(held) * 20 < unbounded  # what a never-evicting cache held
    # a size used again after eviction gets exact, freshly built tables
    h, w = shapes[0]
    k_tables = model.stage_tables(0, (h // 4, w // 4), dev)['gsa_q']
    fresh = RotaryEmbedding2D(16).tables(
        grid_coords(h // 4, w // 4) * (14 / (h // 4)))
    torch.testing.assert_close(k_tables, fresh)

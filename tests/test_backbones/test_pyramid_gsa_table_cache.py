"""``gsa_table_cache``: per-shape GSA RoPE tables vs the official cache.

The official GSA attention rebuilds its query table only when the token
count N = H * W changes and its key table only when N // s**2 changes, so an
input with the same count but another H x W is rotated with the tables (and
AS2DRoPE scale) of the earlier shape. ``'token_count'`` reproduces that;
``'per_shape'`` (default) always uses the current shape.
"""
import copy
import os.path as osp
import sys

import pytest
import torch

from visionllama_mm.backbones.pyramid_vision_llama import (
    PyramidVisionLLaMA, PyramidVisionLLaMADET)

sys.path.insert(0, osp.dirname(__file__))
import pyramid_reference as ref  # noqa: E402

CPU = torch.device('cpu')


def stage_hw(img_hw):
    """(H, W) of the four stages' tokens (patch 4, then 2, 2, 2)."""
    H, W = img_hw[0] // 4, img_hw[1] // 4
    return [(H >> k, W >> k) for k in range(4)]


def assert_tables_equal(got, want):
    for name in ('lsa', 'gsa_q', 'gsa_k'):
        for g, w in zip(got[name], want[name]):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_default_and_choices():
    assert PyramidVisionLLaMA(arch=ref.TINY).gsa_table_cache == 'per_shape'
    with pytest.raises(ValueError, match='gsa_table_cache'):
        PyramidVisionLLaMA(arch=ref.TINY, gsa_table_cache='token')


def test_token_count_keeps_stale_tables_like_the_official_cache():
    torch.manual_seed(0)
    official = PyramidVisionLLaMADET(
        arch=ref.TINY, gsa_table_cache='token_count').eval()
    ours = copy.deepcopy(official)
    ours.gsa_table_cache = 'per_shape'
    a, b = torch.randn(1, 3, 64, 128), torch.randn(1, 3, 128, 64)
    c = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        official(a)  # builds the tables for a's shapes
        out_b = official(b)  # same counts, swapped H / W: stale tables
        # definition: b's forward with the tables of a's shapes
        rebuilt = ours.stage_tables
        ours.stage_tables = (
            lambda k, hw, dev: rebuilt(k,
                                       stage_hw((64, 128))[k], dev))
        want_b = ours(b)
        del ours.stage_tables
        fresh_b = ours(b)
    for got, want, fresh in zip(out_b, want_b, fresh_b):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    # the stale tables change the result (the reason per_shape is default)
    assert any(not torch.equal(g, f) for g, f in zip(out_b, fresh_b))
    for k, (hw_a,
            hw_b) in enumerate(zip(stage_hw((64, 128)), stage_hw((128, 64)))):
        assert_tables_equal(
            official.stage_tables(k, hw_b, CPU),
            ours.stage_tables(k, hw_a, CPU))
    # another token count rebuilds the tables for the new shape
    with torch.no_grad():
        official(c)
    for k, hw in enumerate(stage_hw((64, 64))):
        assert_tables_equal(
            official.stage_tables(k, hw, CPU), ours.stage_tables(k, hw, CPU))


def test_key_table_is_keyed_on_its_own_count():
    """The key table is rebuilt when N // s**2 changes, the query table
    when N changes (the two official checks), so a shape change that keeps
    N // s**2 rebuilds the query table only."""
    model = PyramidVisionLLaMA(
        arch=ref.TINY, auto_scale=True, gsa_table_cache='token_count')
    per_shape = PyramidVisionLLaMA(arch=ref.TINY, auto_scale=True)
    s = model.sr_ratios[0]
    assert s == 8
    # stage 0: (16, 24) -> N 384, keys 384 // 64 = 6
    model.stage_tables(0, (16, 24), CPU)
    # (20, 20): N 400 (query rebuilt), keys 400 // 64 = 6 (key table kept)
    got = model.stage_tables(0, (20, 20), CPU)
    want_q = per_shape.stage_tables(0, (20, 20), CPU)['gsa_q']
    want_k = per_shape.stage_tables(0, (16, 24), CPU)['gsa_k']
    for g, w in zip(got['gsa_q'], want_q):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    for g, w in zip(got['gsa_k'], want_k):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_state_is_bounded_and_not_saved():
    model = PyramidVisionLLaMA(arch=ref.TINY, gsa_table_cache='token_count')
    for h in range(8, 40):
        for k in range(4):
            model.stage_tables(k, (h, 48 - h), CPU)
    assert len(model._gsa_built_hw) <= 2 * model.num_stages
    assert not any('gsa_built' in key for key in model.state_dict())

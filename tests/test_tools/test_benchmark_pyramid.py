"""Smoke test of the pyramid pair of benchmark_backbone.py (tiny input)."""
import importlib.util
import os.path as osp

import pytest

pytest.importorskip('mmpretrain')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'benchmark_backbone',
    osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py'))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_pyramid_pair_tiny(capsys):
    results = bench.main([
        '--model', 'pyramid', '--arch', 's', '--img-size', '32',
        '--batch-size', '1', '--iters', '1', '--warmup', '0', '--device',
        'cpu', '--threads', '1'
    ])
    assert [r['name'] for r in results
            ] == ['PyramidVisionLLaMA-small', 'mmpretrain SVT-small']
    for r in results:
        assert r['fwd_ips'] > 0 and r['train_ips'] > 0
        assert r['gflops'] > 0
    assert round(results[0]['params'] / 1e6, 1) == 25.4  # no head
    out = capsys.readouterr().out
    assert '| ratio (PyramidVisionLLaMA-small / mmpretrain SVT-small) |' in out
    assert '| FLOP-normalised ratio |' in out


def test_pyramid_arch_checked():
    args = bench.parse_args(['--model', 'pyramid', '--arch', 'tiny'])
    with pytest.raises(ValueError, match='--arch must be one of'):
        bench.build_pyramid(args, 0)

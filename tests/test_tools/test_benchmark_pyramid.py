"""Smoke test of the pyramid group of benchmark_backbone.py (tiny input)."""
import pytest
from tool_utils import load_tool

pytest.importorskip('mmpretrain')

bench = load_tool('tools/analysis_tools/benchmark_backbone.py')


def test_pyramid_group_tiny(capsys):
    results = bench.main([
        '--model', 'pyramid', '--arch', 's', '--img-size', '32',
        '--batch-size', '1', '--iters', '1', '--warmup', '1', '--device',
        'cpu', '--threads', '1', '--peers', 'mmpretrain-svt', '--modes',
        'eager'
    ])
    assert [r['name'] for r in results
            ] == ['PyramidVisionLLaMA-small', 'mmpretrain SVT-small']
    for r in results:
        assert r['fwd_ips'] > 0 and r['train_ips'] > 0
        assert r['gflops'] > 0
    assert round(results[0]['params'] / 1e6, 1) == 25.4  # no head
    out = capsys.readouterr().out
    assert ('| PyramidVisionLLaMA-small / mmpretrain SVT-small | eager |'
            in out)


def test_pyramid_arch_checked():
    args = bench.parse_args(['--model', 'pyramid', '--arch', 'tiny'])
    with pytest.raises(ValueError, match='--arch must be one of'):
        bench.pyramid_ours(args)

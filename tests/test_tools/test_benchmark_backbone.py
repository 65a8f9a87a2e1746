"""Smoke test of tools/analysis_tools/benchmark_backbone.py (tiny size)."""
import pytest
from tool_utils import load_tool

pytest.importorskip('mmpretrain')

bench = load_tool('tools/analysis_tools/benchmark_backbone.py')


def test_plain_pair_tiny(capsys):
    results = bench.main([
        '--model', 'plain', '--arch', 'custom', '--embed-dims', '32',
        '--depth', '1', '--num-heads', '2', '--patch-size', '8', '--img-size',
        '32', '--batch-size', '2', '--iters', '1', '--warmup', '0', '--device',
        'cpu', '--threads', '1'
    ])
    names = [r['name'] for r in results]
    assert names == ['VisionLLaMA', 'mmpretrain ViT']
    for r in results:
        assert r['fwd_ips'] > 0 and r['train_ips'] > 0
        assert r['params'] > 0
    out = capsys.readouterr().out
    assert '| ratio (VisionLLaMA / mmpretrain ViT) |' in out


def test_parameter_matched_with_llama_rule():
    """The plain pair is parameter-matched with ffn_hidden_rule='llama'."""
    args = bench.parse_args(['--arch', 'base'])
    import torch
    with torch.device('meta'):
        ours = bench.build_plain(args, 0)[1]
    n = sum(p.numel() for p in ours.parameters())
    assert abs(n / 1e6 - 85.7) < 0.1


def test_unknown_pair():
    with pytest.raises(SystemExit):
        bench.parse_args(['--model', 'swin'])

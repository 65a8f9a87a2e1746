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


def test_rounds_alternate_workers_and_take_the_median(monkeypatch):
    """Each round runs both workers; throughput = batch / median time."""
    calls = []

    def fake_worker(argv, which):
        calls.append(which)
        slow = 10. if len(calls) == 1 else 1.  # one slow phase, first worker
        return dict(
            name=str(which),
            params=1,
            gflops=1.,
            fwd_times=[slow, 1., 1.],
            train_times=[2., 2., 2.],
            fwd_mem=float(len(calls)),
            train_mem=1.)

    monkeypatch.setattr(bench, 'run_worker', fake_worker)
    results = bench.run_pair([], rounds=2, batch_size=4)
    assert calls == [0, 1, 0, 1]
    assert [r['fwd_ips'] for r in results] == [4., 4.]
    assert [r['train_ips'] for r in results] == [2., 2.]
    assert [r['fwd_mem'] for r in results] == [3., 4.]  # largest round
    assert not any(k.endswith('_times') for r in results for k in r)


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

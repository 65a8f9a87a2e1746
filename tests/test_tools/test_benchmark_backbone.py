"""Tests of tools/analysis_tools/benchmark_backbone.py (tiny sizes)."""
import pytest
import torch
from tool_utils import load_tool

pytest.importorskip('mmpretrain')

bench = load_tool('tools/analysis_tools/benchmark_backbone.py')

TINY_PLAIN = [
    '--model', 'plain', '--arch', 'custom', '--embed-dims', '32', '--depth',
    '1', '--num-heads', '2', '--patch-size', '8', '--img-size', '32',
    '--batch-size', '2', '--iters', '1', '--warmup', '1', '--device', 'cpu',
    '--threads', '1'
]


def test_plain_group_tiny_eager_and_compiled(capsys):
    """End to end: fresh workers, eager and compiled, ratios printed."""
    pytest.importorskip('timm')
    results = bench.main(TINY_PLAIN + [
        '--peers', 'timm-eva02', '--modes', 'eager,compiled',
        '--compile-backend', 'aot_eager'
    ])
    assert [(r['key'], r['mode'])
            for r in results] == [('ours', 'eager'), ('ours', 'compiled'),
                                  ('timm-eva02', 'eager'),
                                  ('timm-eva02', 'compiled')]
    for r in results:
        assert 'error' not in r, r
        assert r['fwd_ips'] > 0 and r['train_ips'] > 0
        assert r['params'] > 0 and r['gflops'] > 0
        # a training step is forward + backward: 2-3x the forward's work
        assert 2 * 2 * r['gflops'] <= r['train_flops'] / 1e9 <= 2 * 3.1 * r[
            'gflops']
        assert r['train_mfu'] is None  # no peak known on CPU
    assert [r['name'] for r in results[::2]] == ['VisionLLaMA', 'timm EVA02']
    assert results[1]['graph_breaks'] == 0  # ours compiles in one graph
    out = capsys.readouterr().out
    for row in ('| VisionLLaMA / timm EVA02 | eager |',
                '| VisionLLaMA / timm EVA02 | compiled |',
                '| VisionLLaMA | compiled / eager |',
                '| timm EVA02 | compiled / eager |'):
        assert row in out


def test_unavailable_peer_is_reported(capsys):
    """A worker that fails comes back as an error, shown in the table."""
    error = bench.run_worker(TINY_PLAIN, 'official', 'eager')
    assert error['key'] == 'official' and '--official-root' in error['error']
    args = bench.parse_args(TINY_PLAIN)
    table = bench.format_table([error], args)
    assert '| official | eager | unavailable: RuntimeError: needs ' in table


def test_baseline_peer_builds_ours_from_another_checkout(tmp_path):
    """--baseline-root measures our model imported from that checkout (here
    this one: the worker reports where visionllama_mm came from)."""
    result = bench.run_worker(
        TINY_PLAIN + ['--phases', 'train', '--baseline-root', bench.ROOT],
        'baseline', 'eager')
    assert 'error' not in result, result
    assert result['name'] == f'VisionLLaMA (baseline {bench.ROOT})'
    args = bench.parse_args(TINY_PLAIN + ['--baseline-root', bench.ROOT])
    assert bench.jobs_of(args)[:2] == [('ours', 'eager'), ('ours', 'compiled')]
    assert ('baseline', 'eager') in bench.jobs_of(args)
    with pytest.raises(SystemExit):  # not a checkout of this package
        bench.parse_args(['--baseline-root', str(tmp_path)])


def test_rounds_interleave_workers_and_take_the_median(monkeypatch):
    """Each round runs every job, alternating the order; median times."""
    calls = []

    def fake_worker(argv, key, mode):
        calls.append((key, mode))
        slow = 10. if len(calls) == 1 else 1.  # one slow phase, first worker
        return dict(
            key=key,
            mode=mode,
            name=key,
            params=1,
            gflops=1.,
            train_flops=6e9,
            peak_tflops=0.012,
            fwd_times=[slow, 1., 1.],
            train_times=[2., 2., 2.],
            fwd_first_s=1.,
            train_first_s=1.,
            fwd_mem=float(len(calls)),
            train_mem=1.)

    monkeypatch.setattr(bench, 'run_worker', fake_worker)
    jobs = [('ours', 'eager'), ('peer', 'eager')]
    results = bench.run_rounds([], jobs, rounds=2, batch_size=4)
    assert calls == jobs + jobs[::-1]
    assert [r['fwd_ips'] for r in results] == [4., 4.]
    assert [r['train_ips'] for r in results] == [2., 2.]
    assert [r['fwd_mem'] for r in results] == [4., 3.]  # largest round
    # 6 GFLOPs per image at 2 img/s on a 12 GFLOP/s device
    assert results[0]['train_mfu'] == pytest.approx(1.)
    assert not any(k.endswith('_times') for r in results for k in r)


def test_ratio_rows():

    def res(key, mode, name, fwd, train, gflops):
        return dict(
            key=key,
            mode=mode,
            name=name,
            fwd_ips=fwd,
            train_ips=train,
            gflops=gflops)

    results = [
        res('ours', 'eager', 'A', 10., 4., 2.),
        res('ours', 'compiled', 'A', 15., 6., 2.),
        res('peer', 'eager', 'B', 5., 4., 1.),
        dict(key='peer', mode='compiled', error='boom'),
    ]
    rows = bench.ratio_rows(results)
    assert len(rows) == 2  # A/B eager; A compiled/eager (B compiled failed)
    peer, comp = rows
    assert (peer['num'], peer['den'], peer['mode']) == ('A', 'B', 'eager')
    assert peer['fwd'] == 2. and peer['train'] == 1.
    assert peer['fwd_per_flop'] == 4. and peer['train_per_flop'] == 2.
    assert comp['num'] == 'A' and comp['mode'] == 'compiled / eager'
    assert comp['fwd'] == 1.5 and comp['train'] == 1.5


def test_peak_table_and_mfu():
    assert bench.peak_tflops('NVIDIA H200', 'bfloat16') == 989.
    assert bench.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.
    assert bench.peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.
    assert bench.peak_tflops('NVIDIA A100-SXM4-80GB', 'bfloat16') == 312.
    assert bench.peak_tflops('NVIDIA A100-SXM4-80GB', 'float32') == 19.5
    assert bench.peak_tflops('Tesla V100-SXM2-32GB', 'bfloat16') is None
    assert bench.peak_tflops('Some CPU', 'bfloat16') is None
    # 1 TFLOP per item at 450 items/s on a 1000 TFLOP/s device: 45%
    assert bench.mfu(1e12, 450., 1000.) == pytest.approx(0.45)
    assert bench.mfu(1e12, 450., None) is None


def test_peak_override_and_cpu_peak():
    args = bench.parse_args(['--device', 'cpu', '--peak-tflops', '2.5'])
    assert bench._device_peak(args, torch.device('cpu')) == 2.5
    args = bench.parse_args(['--device', 'cpu'])
    assert bench._device_peak(args, torch.device('cpu')) is None


def test_count_flops_of_a_linear_and_of_cpu_attention():
    lin = torch.nn.Linear(8, 16, bias=False)
    subject = bench.Subject('lin', lin, lambda b, d: (torch.randn(b, 8), ))
    fwd, train = bench.count_flops(subject, torch.device('cpu'))
    assert fwd == 2 * 8 * 16
    assert train == 2 * 2 * 8 * 16  # forward and the weight's gradient

    class Attn(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(
                q * self.w, q, q)

    n, d = 16, 8  # one head: q k^T and attn v, 2 * n * n * d FLOPs each
    subject = bench.Subject('attn', Attn(), lambda b, dev:
                            (torch.randn(b, 1, n, d), ))
    fwd, train = bench.count_flops(subject, torch.device('cpu'))
    assert fwd == 4 * n * n * d
    assert train == fwd + 5 * n * n * d * 2  # backward: 2.5x forward


def test_option_parsing():
    args = bench.parse_args([])
    assert args.modes == ['eager', 'compiled']
    assert args.sdpa_backends == ['flash', 'efficient']
    assert args.amp_dtype == 'bfloat16'
    assert args.peers == ['official', 'timm-eva02', 'mmpretrain-vit']
    args = bench.parse_args(['--model', 'dit', '--sdpa-backends', 'math'])
    assert args.peers == ['official', 'official-dit', 'diffusers-dit']
    assert args.sdpa_backends == ['math']
    assert bench.jobs_of(
        bench.parse_args(['--peers', 'timm-eva02', '--modes',
                          'compiled'])) == [('ours', 'compiled'),
                                            ('timm-eva02', 'compiled')]
    for bad in (['--model',
                 'swin'], ['--modes',
                           'jit'], ['--sdpa-backends',
                                    'flash,fast'], ['--peers', 'timm'],
                ['--peak-tflops', '0'], ['--official-root', '/nonexistent']):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_sdpa_context_is_a_no_op_on_cpu():
    args = bench.parse_args(['--device', 'cpu'])
    with bench.sdpa_context(args, torch.device('cpu')):
        q = torch.randn(1, 1, 4, 8)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_official_needs_a_checkout(tmp_path):
    args = bench.parse_args(['--official-root', str(tmp_path)])
    with pytest.raises(RuntimeError, match='has no mmpretrain/ folder'):
        bench.plain_official(args)
    args = bench.parse_args([])
    with pytest.raises(RuntimeError, match='needs --official-root'):
        bench.dit_official(args)


def test_parameter_matched_with_llama_rule():
    """The plain group is parameter-matched with ffn_hidden_rule='llama'."""
    args = bench.parse_args(['--arch', 'base'])
    with torch.device('meta'):
        ours = bench.plain_ours(args).model
    n = sum(p.numel() for p in ours.parameters())
    assert abs(n / 1e6 - 85.7) < 0.1


def test_dit_subject_inputs():
    args = bench.parse_args([
        '--model', 'dit', '--arch', 'custom', '--embed-dims', '32', '--depth',
        '1', '--num-heads', '2', '--img-size', '64'
    ])
    subject = bench.dit_ours(args)
    x, t, y = subject.inputs(3, torch.device('cpu'))
    assert x.shape == (3, 4, 8, 8) and t.shape == y.shape == (3, )
    assert subject.model(x, t, y).shape == (3, 8, 8, 8)
    assert subject.name == 'DiT-LLaMA-CUSTOM/4'


def test_profile_shares_of_a_step():
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(32, 64)

    def step():
        lin(x).relu().sum().backward()

    prof = bench.profile_step(step, torch.device('cpu'), top=3)
    assert sum(prof['shares'].values()) == pytest.approx(1.)
    assert prof['shares']['matmul'] > 0 and prof['shares']['other'] > 0
    assert len(prof['top']) == 3
    assert bench.op_category('aten::addmm') == 'matmul'
    assert bench.op_category(
        'aten::_scaled_dot_product_flash_attention_for_cpu') == 'attention'
    assert bench.op_category('aten::native_layer_norm') == 'other'

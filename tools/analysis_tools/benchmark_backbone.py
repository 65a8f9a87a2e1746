"""Throughput and peak memory of our backbones against their baselines.

Each ``--model`` names a pair: one of our backbones and the mmpretrain
baseline of the same shape, measured in the same run with the same input:

* ``plain``: :class:`visionllama_mm.backbones.VisionLLaMA` vs mmpretrain's
  ``VisionTransformer`` (same width, depth, heads and patch; the SwiGLU
  width follows ``--ffn-hidden-rule``: ``llama`` is parameter-matched with
  ViT, ``mmpretrain`` is the official, 3x wider FFN).
* ``pyramid``: :class:`visionllama_mm.backbones.PyramidVisionLLaMA`
  (classifier face) vs mmpretrain's Twins-SVT (``SVT``) of the same size
  (``--arch s|b|l``; SVT with ``qkv_bias=True`` like ours).
* further pairs register a builder in :data:`PAIRS`.

For every model it reports the forward throughput (inference mode), the
training-step throughput (forward, backward and an SGD step) and the peak
memory of each: ``torch.cuda.max_memory_allocated`` on GPU, the growth of
the peak resident set size of the worker process on CPU. Every model is
measured in its own fresh worker process (this script with ``--worker``)
so that peaks do not mix; ``--rounds`` repeats the pair, alternating the
two models, and throughput is the batch size over the median iteration
time of all rounds (robust to a slow phase of a shared machine).

Example::

    python tools/analysis_tools/benchmark_backbone.py --model plain \\
        --arch base --img-size 224 --batch-size 32 --device cuda --amp
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_TAG = '[benchmark-result] '

# ---------------------------------------------------------------------------
# model pairs: name -> builder(args, which) for which in (0, 1)
# ---------------------------------------------------------------------------


def _plain_arch(args) -> dict:
    from visionllama_mm.backbones import VisionLLaMA
    if args.arch in VisionLLaMA.arch_zoo:
        return dict(VisionLLaMA.arch_zoo[args.arch])
    tiny = dict(
        embed_dims=args.embed_dims,
        num_layers=args.depth,
        num_heads=args.num_heads,
        feedforward_channels=4 * args.embed_dims)
    if args.arch != 'custom':
        raise ValueError(f'--arch must be custom or one of '
                         f'{sorted(VisionLLaMA.arch_zoo)}, got {args.arch}')
    return tiny


def build_plain(args, which: int) -> Tuple[str, torch.nn.Module]:
    arch = _plain_arch(args)
    if which == 0:
        from visionllama_mm.backbones import VisionLLaMA
        return 'VisionLLaMA', VisionLLaMA(
            arch=arch,
            img_size=args.img_size,
            patch_size=args.patch_size,
            ffn_hidden_rule=args.ffn_hidden_rule,
            out_type='avg_featmap',
            final_norm=False)
    from mmpretrain.models import VisionTransformer
    return 'mmpretrain ViT', VisionTransformer(
        arch=arch,
        img_size=args.img_size,
        patch_size=args.patch_size,
        out_type='avg_featmap',
        with_cls_token=False,
        final_norm=False)


def build_pyramid(args, which: int) -> Tuple[str, torch.nn.Module]:
    from visionllama_mm.backbones import PyramidVisionLLaMA
    if args.arch not in PyramidVisionLLaMA.arch_zoo:
        raise ValueError(f'--arch must be one of '
                         f'{sorted(PyramidVisionLLaMA.arch_zoo)} for the '
                         f'pyramid pair, got {args.arch}')
    arch = {'s': 'small', 'b': 'base', 'l': 'large'}.get(args.arch, args.arch)
    if which == 0:
        return f'PyramidVisionLLaMA-{arch}', PyramidVisionLLaMA(
            arch=arch, out_type='avg_featmap')
    from mmpretrain.models import SVT
    model = SVT(
        arch=arch,
        qkv_bias=True,
        out_indices=(3, ),
        norm_after_stage=[False, False, False, True])
    model.init_weights()
    return f'mmpretrain SVT-{arch}', model


PAIRS: Dict[str, Callable] = {'plain': build_plain, 'pyramid': build_pyramid}

# ---------------------------------------------------------------------------
# measurement (runs in a worker process)
# ---------------------------------------------------------------------------


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int, iters: int) -> List[float]:
    """Seconds of each of ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs of one image (mmengine's counter: one multiply-add = 1)."""
    from mmengine.analysis import FlopAnalyzer
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total() / 1e9


def measure(args, which: int) -> dict:
    """Build one model of the pair and measure it."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name, model = PAIRS[args.model](args, which)
    model = model.to(device)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(
        args.batch_size, 3, args.img_size, args.img_size, device=device)
    amp = torch.autocast(
        device.type,
        dtype=torch.bfloat16 if device.type == 'cpu' else torch.float16,
        enabled=args.amp)
    result = dict(name=name, params=params, gflops=_gflops(model, x[:1]))

    # forward
    model.eval()

    def forward():
        with torch.inference_mode(), amp:
            model(x)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mib()
    result['fwd_times'] = _timed(forward, device, args.warmup, args.iters)
    if device.type == 'cuda':
        result['fwd_mem'] = (torch.cuda.max_memory_allocated(device) -
                             base) / 2**20
    else:
        result['fwd_mem'] = _peak_rss_mib() - base

    # training step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train_step():
        with amp:
            loss = _first(model(x)).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    result['train_times'] = _timed(train_step, device, args.warmup, args.iters)
    if device.type == 'cuda':
        result['train_mem'] = (torch.cuda.max_memory_allocated(device) -
                               base) / 2**20
    else:
        result['train_mem'] = _peak_rss_mib() - base
    return result


def run_worker(argv: List[str], which: int) -> dict:
    """Measure one model of the pair in a fresh worker process."""
    cmd = [sys.executable, osp.abspath(__file__)
           ] + list(argv) + ['--worker', str(which)]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [
        line for line in proc.stdout.splitlines()
        if line.startswith(RESULT_TAG)
    ]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'benchmark worker {which} failed:\n'
                           f'{proc.stdout[-2000:]}{proc.stderr[-4000:]}')
    return json.loads(lines[-1][len(RESULT_TAG):])


def run_pair(argv: List[str], rounds: int, batch_size: int) -> List[dict]:
    """Measure both models ``rounds`` times, alternating fresh workers.

    Throughput is the batch size over the median iteration time of all
    rounds, so a slow phase of a shared machine (which hits one worker, not
    both) moves the ratio less than a mean over one run would; peak memory
    is the largest of the rounds.
    """
    runs = [[run_worker(argv, which) for which in (0, 1)]
            for _ in range(rounds)]
    results = []
    for which in (0, 1):
        mine = [r[which] for r in runs]
        result = {k: v for k, v in mine[0].items() if not k.endswith('_times')}
        for kind in ('fwd', 'train'):
            times = [t for r in mine for t in r[f'{kind}_times']]
            result[f'{kind}_ips'] = batch_size / statistics.median(times)
            result[f'{kind}_mem'] = max(r[f'{kind}_mem'] for r in mine)
        results.append(result)
    return results


def format_table(results: List[dict], args) -> str:
    mem = 'GPU MiB' if args.device.startswith('cuda') else 'RSS MiB'
    lines = [
        f'{args.model}: batch {args.batch_size}, {args.img_size} px, '
        f'device {args.device}, amp {args.amp}; median of '
        f'{args.rounds} x {args.iters} iterations, the two models '
        f'alternating',
        f'| model | params (M) | GFLOPs | fwd img/s | train img/s | fwd peak '
        f'{mem} | train peak {mem} |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in results:
        lines.append(f'| {r["name"]} | {r["params"] / 1e6:.2f} | '
                     f'{r["gflops"]:.2f} | '
                     f'{r["fwd_ips"]:.1f} | {r["train_ips"]:.1f} | '
                     f'{r["fwd_mem"]:.0f} | {r["train_mem"]:.0f} |')
    ours, ref = results

    def ratio(key):
        return ours[key] / ref[key] if ref[key] > 0 else float('nan')

    lines.append(f'| ratio ({ours["name"]} / {ref["name"]}) | '
                 f'{ratio("params"):.2f} | {ratio("gflops"):.2f} | '
                 f'{ratio("fwd_ips"):.2f} | '
                 f'{ratio("train_ips"):.2f} | {ratio("fwd_mem"):.2f} | '
                 f'{ratio("train_mem"):.2f} |')
    # throughput per FLOP: separates implementation speed from the extra
    # work an architecture does (e.g. the wider SwiGLU of the pyramid)
    flops = ratio('gflops')
    lines.append(f'| FLOP-normalised ratio | | | '
                 f'{ratio("fwd_ips") * flops:.2f} | '
                 f'{ratio("train_ips") * flops:.2f} | | |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--model', default='plain', help=f'pair to compare: {list(PAIRS)}')
    parser.add_argument(
        '--arch',
        default='base',
        help='arch name of the pair, or "custom" with --embed-dims/--depth/'
        '--num-heads')
    parser.add_argument('--embed-dims', type=int, default=64)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--num-heads', type=int, default=2)
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument(
        '--ffn-hidden-rule',
        default='llama',
        choices=['llama', 'mmpretrain'],
        help='SwiGLU width of the plain model (llama: parameter-matched)')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='fresh worker pairs, alternating the two models')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='autocast')
    parser.add_argument(
        '--threads', type=int, default=0, help='torch CPU threads (0: keep)')
    parser.add_argument(
        '--worker', type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model not in PAIRS:
        parser.error(f'--model must be one of {list(PAIRS)}, got '
                     f'{args.model!r}')
    return args


def main(argv=None) -> List[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker is not None:
        print(RESULT_TAG + json.dumps(measure(args, args.worker)), flush=True)
        return []
    results = run_pair(argv, args.rounds, args.batch_size)
    print(format_table(results, args), flush=True)
    return results


if __name__ == '__main__':
    main()

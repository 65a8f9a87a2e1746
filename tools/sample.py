"""Sample class-conditional images from a DiT-LLaMA / SiT-LLaMA checkpoint.

Writes a sample grid (PNG) and, for FID, an ``.npz`` holding ``arr_0``
(uint8 N x H x W x 3, the ADM evaluation-suite format) and ``labels``.

Runs on any number of processes (``tools/dist_sample.sh`` / torchrun with
``--launcher pytorch``; gloo on machines without CUDA) and resumes: the
samples are written in shards under ``OUT_DIR/shards`` and a restarted run
samples only the missing ones. Sample i's label and noise depend only on
(``--seed``, i), so any number of processes writes the same images (see
:mod:`visionllama_mm.generation.sampling`).

Examples::

    # official FID setting of DiT-LLaMA (250 DDPM steps, 50k samples)
    python tools/sample.py \
        configs/dit_llama/dit-llama-xl-2_8xb32-2400k_in1k-256.py \
        dit_llama_xl2_ema.pth --num-samples 50000 --cfg-scale 1.5

    # the same on 8 GPUs (restart the same command to resume)
    bash tools/dist_sample.sh \
        configs/dit_llama/dit-llama-xl-2_8xb32-2400k_in1k-256.py \
        dit_llama_xl2_ema.pth 8 --num-samples 50000 --cfg-scale 1.5

    # DDIM, 50 steps, eta 0
    python tools/sample.py CONFIG CKPT --sampler ddim --num-steps ddim50

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
    parser.add_argument(
        '--batch-size', type=int, default=32, help='samples per process step')
    parser.add_argument(
        '--shard-size',
        type=int,
        default=256,
        help='samples per shard file (the unit of resuming)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-scale', type=float, default=None)
    parser.add_argument(
        '--num-steps',
        default=None,
        help='DDPM / DDIM respacing (e.g. 250, ddim50) or SiT SDE / ODE '
        'steps (official 250)')
    parser.add_argument(
        '--mode',
        choices=['sde', 'ode'],
        default=None,
        help='SiT sampler (default sde)')
    parser.add_argument(
        '--sampler',
        choices=['ddpm', 'ddim'],
        default=None,
        help='DiT sampler (default ddpm)')
    parser.add_argument(
        '--eta', type=float, default=None, help='DDIM noise scale')
    parser.add_argument(
        '--method',
        default=None,
        help='SiT solver: SDE Euler / Heun, ODE dopri5 / euler / heun2')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (tools/dist_sample.sh sets pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
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
    """Load the checkpoint's ``state_dict`` (the EMA weights for runner
    checkpoints and released files) strictly, through mmengine's loading
    (:func:`visionllama_mm.weights.load_strict`): a file that leaves a
    tensor of the model unfilled, or holds tensors the model does not use,
    raises ``CheckpointMismatchError``. ``trusted`` allows full unpickling
    of a runner checkpoint (torch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``)."""
    from visionllama_mm.weights import load_strict
    if trusted:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    load_strict(model, path, map_location='cpu')


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
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    from mmengine.dist import get_dist_info
    from mmengine.registry import init_default_scope

    import visionllama_mm.generation  # noqa: F401  (registers the models)
    from visionllama_mm.generation.sampling import (init_distributed,
                                                    sample_shards,
                                                    to_uint8_nhwc)
    from visionllama_mm.registry import MODELS

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    device = init_distributed(args.launcher) or torch.device(args.device)
    rank, _ = get_dist_info()
    init_default_scope(cfg.get('default_scope', 'visionllama_mm'))
    model = MODELS.build(cfg.model)
    if args.checkpoint != 'none':
        load_weights(model, args.checkpoint, args.trusted)
    model.to(device).eval()

    num_classes = model.num_classes
    n = args.num_samples
    labels = None
    if args.labels is not None:
        labels = [c for c in args.labels for _ in range(args.repeat)]
        n = n or len(labels)
        if min(labels) < 0 or max(labels) >= num_classes:
            raise ValueError(f'labels must be in [0, {num_classes})')
    n = n or 16

    kwargs = dict(model.sample_cfg)
    for key in ('cfg_scale', 'mode', 'sampler', 'eta', 'method'):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.num_steps is not None:
        steps = args.num_steps
        kwargs['num_steps'] = int(steps) if steps.isdigit() else steps

    out_dir = args.out_dir or osp.join(
        'work_dirs', 'samples',
        osp.splitext(osp.basename(args.config))[0])

    def sample_fn(lab, generators):
        with torch.no_grad():
            x = model.sample(lab.to(device), generator=generators, **kwargs)
        return to_uint8_nhwc(x)

    job = dict(
        config=osp.abspath(args.config),
        checkpoint=args.checkpoint
        if args.checkpoint == 'none' else osp.abspath(args.checkpoint),
        cfg_options=str(args.cfg_options),
        sample_kwargs={
            k: str(v)
            for k, v in sorted(kwargs.items())
        })
    npz_path = sample_shards(
        sample_fn,
        n,
        out_dir,
        num_classes,
        seed=args.seed,
        labels=labels,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        job=job)
    grid_path = osp.join(out_dir, 'samples.png')
    if rank == 0:
        with np.load(npz_path) as data:
            grid_max = args.grid_max or (min(n, 256) if labels else 64)
            grid = torch.from_numpy(data['arr_0'][:grid_max]).permute(
                0, 3, 1, 2)
        nrow = args.nrow or (args.repeat if labels and args.repeat > 1 else
                             int(math.ceil(math.sqrt(len(grid)))))
        save_grid(grid, grid_path, nrow)
        print(f'\nwrote {grid_path} and {npz_path} ({n} samples)')
    return grid_path, npz_path


if __name__ == '__main__':
    main()

"""Extract the SD-VAE posterior of every training image once (sharded,
resumable), for DiT-LLaMA / SiT-LLaMA training from cached latents.

The images go through the config's training pipeline without its random
flip, and through the model's data preprocessor (to [-1, 1]); the VAE is
the config's ``model.vae`` (a local ``diffusers.AutoencoderKL`` folder).
Each image's posterior mean and log-variance are stored (and, when the
pipeline flips, those of the flipped image too), so training still draws a
fresh latent sample (and flip) every time, exactly as encoding on the fly
does (``visionllama_mm.CachedLatents``; ``cached_latents=True``). Shards are
written atomically; rerun the same command to finish an interrupted run.

Examples::

    python tools/dataset_converters/extract_latents.py \
        configs/dit_llama/dit-llama-xl-2_8xb32-2400k_in1k-256.py \
        --out-dir data/imagenet256_sd-vae-ft-ema_latents
    # 8 GPUs
    torchrun --nproc_per_node 8 tools/dataset_converters/extract_latents.py \
        CONFIG --out-dir DIR --launcher pytorch

Then train with the ``*_latents.py`` configs (or set
``model.cached_latents=True`` and a ``visionllama_mm.CachedLatents``
dataset).
"""
import argparse
import copy
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Pre-extract SD-VAE latents (posterior moments)')
    parser.add_argument('config', help='DiT-LLaMA / SiT-LLaMA config')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--shard-size', type=int, default=1024)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument(
        '--dtype',
        choices=['float32', 'float16'],
        default='float32',
        help='storage dtype (float16 halves the disk; float32 is exact)')
    parser.add_argument(
        '--no-flip',
        action='store_true',
        help='store only the unflipped image even if the pipeline flips')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


def _save_npy_atomic(path, array):
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        np.save(f, array)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    from mmengine.dataset import pseudo_collate
    from mmengine.dist import barrier, get_dist_info
    from mmengine.registry import DATASETS, MODELS, init_default_scope

    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.datasets.cached_latents import latent_shard_paths
    from visionllama_mm.generation.mmagic_face import (FrozenVAE,
                                                       _GenerativeModel)
    from visionllama_mm.generation.sampling import (check_job,
                                                    init_distributed,
                                                    run_shards)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    device = init_distributed(args.launcher) or torch.device(args.device)
    rank, _ = get_dist_info()
    init_default_scope(cfg.get('default_scope', 'visionllama_mm'))
    if not cfg.model.get('vae'):
        raise ValueError(f'{args.config} has no model.vae: nothing to '
                         'extract (pixel-space model)')

    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    pipeline = list(ds_cfg.get('pipeline', []))
    kept = [t for t in pipeline if not str(t['type']).endswith('Flip')]
    flips = len(kept) < len(pipeline) and not args.no_flip
    ds_cfg.pipeline = kept
    dataset = DATASETS.build(ds_cfg)
    preprocessor = MODELS.build(cfg.model.data_preprocessor).to(device)
    vae = FrozenVAE(**cfg.model.vae)
    dtype = np.dtype(args.dtype)

    num = len(dataset)
    num_shards = -(-num // args.shard_size)
    job = dict(
        num_samples=num,
        shard_size=args.shard_size,
        flips=flips,
        dtype=args.dtype,
        config=osp.abspath(args.config),
        vae=dict(cfg.model.vae),
        pipeline=str(kept))
    if rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
        check_job(args.out_dir, job)
    barrier()
    if rank != 0:
        check_job(args.out_dir, job)

    def work(k):
        stop = min((k + 1) * args.shard_size, num)
        moments, labels = [], []
        for s in range(k * args.shard_size, stop, args.batch_size):
            items = [
                dataset[i] for i in range(s, min(s + args.batch_size, stop))
            ]
            data = preprocessor(pseudo_collate(items), training=False)
            x = data['inputs'].to(device)
            m = [vae.moments(x)]
            if flips:
                m.append(vae.moments(x.flip(-1)))
            moments.append(torch.stack(m, 1).float().cpu().numpy())
            labels.append(
                _GenerativeModel.labels_from(data['data_samples']).numpy())
        mom_path, lab_path = latent_shard_paths(args.out_dir, k)
        _save_npy_atomic(mom_path, np.concatenate(moments).astype(dtype))
        # the labels file marks the shard as done: written last
        _save_npy_atomic(lab_path, np.concatenate(labels).astype(np.int64))

    run_shards(num_shards,
               lambda k: osp.isfile(latent_shard_paths(args.out_dir, k)[1]),
               work, f'extract {num} latents')
    return args.out_dir


if __name__ == '__main__':
    main()

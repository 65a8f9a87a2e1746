"""Data transforms of the official recipes that the libraries lack.

``CenterCropArr`` is ADM's ``center_crop_arr`` (openai/guided-diffusion
``image_datasets.py``), the preprocessing of the official DiT / SiT (and
DiT-LLaMA / SiT-LLaMA) training scripts: halve the image with a box filter
while its short side is at least twice the target, resize (bicubic) so the
short side equals the target, then take the centre square. mmagic's
``CenterCropLongEdge`` + ``Resize`` crops first and resizes once, which
gives other pixels.
"""
from typing import List, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image

from visionllama_mm.registry import TRANSFORMS

__all__ = ['CenterCropArr', 'center_crop_arr']


def center_crop_arr(img: np.ndarray, image_size: int) -> np.ndarray:
    """ADM centre crop of an (H, W) or (H, W, C) uint8 array.

    Args:
        img (np.ndarray): The image (uint8; the channel order is kept).
        image_size (int): Side of the square output.

    Returns:
        np.ndarray: (image_size, image_size[, C]) uint8 array.
    """
    if img.dtype != np.uint8:
        raise TypeError(f'img must be uint8, got {img.dtype}')
    pil = Image.fromarray(img)
    while min(*pil.size) >= 2 * image_size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = image_size / min(*pil.size)
    pil = pil.resize(
        tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.asarray(pil)
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return np.ascontiguousarray(arr[top:top + image_size,
                                    left:left + image_size])


@TRANSFORMS.register_module()
class CenterCropArr(BaseTransform):
    """ADM ``center_crop_arr`` on the images under ``keys``.

    Required keys: ``keys``. Modified keys: ``keys`` (and ``{key}_shape``
    when present, as mmagic's transforms keep it).

    Args:
        keys (str | Sequence[str]): Result keys of uint8 HWC images.
        image_size (int): Side of the square output. Defaults to 256.
    """

    def __init__(self,
                 keys: Union[str, Sequence[str]],
                 image_size: int = 256) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(
                f'image_size must be a positive int, got {image_size!r}')
        self.keys: List[str] = [keys] if isinstance(keys, str) else list(keys)
        self.image_size = image_size

    def transform(self, results: dict) -> dict:
        for key in self.keys:
            results[key] = center_crop_arr(results[key], self.image_size)
            if f'{key}_shape' in results:
                results[f'{key}_shape'] = results[key].shape
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(keys={self.keys}, '
                f'image_size={self.image_size})')

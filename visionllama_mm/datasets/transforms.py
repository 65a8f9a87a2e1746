"""Data transforms of the official recipes that the libraries lack.

``CenterCropArr`` is ADM's ``center_crop_arr`` (openai/guided-diffusion
``image_datasets.py``), the preprocessing of the official DiT / SiT (and
DiT-LLaMA / SiT-LLaMA) training scripts: halve the image with a box filter
while its short side is at least twice the target, resize (bicubic) so the
short side equals the target, then take the centre square. mmagic's
``CenterCropLongEdge`` + ``Resize`` crops first and resizes once, which
gives other pixels.

``ToGrayscale`` makes a colour image one-channel for the one-channel
quick-start models.
"""
from typing import List, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image

from visionllama_mm.registry import TRANSFORMS

__all__ = ['CenterCropArr', 'center_crop_arr', 'ToGrayscale']


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


@TRANSFORMS.register_module()
class ToGrayscale:
    """Make ``results['img']`` a one-channel (H, W) image.

    A colour image (H, W, 3) in BGR order, as ``mmcv.imread`` and
    ``LoadImageFromFile`` give it, is converted with the ITU-R 601 luma
    weights (``mmcv.bgr2gray``); an (H, W, 1) image is squeezed; an (H, W)
    image passes unchanged. One-channel models (the MNIST quick start) use
    it so that image files, which load as colour, match their inputs, e.g.
    with mmpretrain's ``ImageClassificationInferencer``.
    """

    def __call__(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        elif img.ndim == 3 and img.shape[2] in (3, 4):
            import mmcv
            img = mmcv.bgr2gray(np.ascontiguousarray(img[..., :3]))
        elif img.ndim != 2:
            raise ValueError('ToGrayscale: results["img"] must have shape '
                             '(H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got '
                             f'{img.shape}')
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'

"""Small data transforms (registered in ``visionllama_mm``)."""
import numpy as np

from visionllama_mm.registry import TRANSFORMS

__all__ = ['ToGrayscale']


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

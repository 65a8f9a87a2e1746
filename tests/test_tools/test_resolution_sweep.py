"""tools/analysis_tools/resolution_sweep.py and its module."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from visionllama_mm.analysis.resolution import (backbone_kind, format_table,
                                                pipeline_size,
                                                position_variants,
                                                scale_pipeline)

pytest.importorskip('mmpretrain')
pytest.importorskip('mlxtend')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'resolution_sweep.py')
QS = osp.join(ROOT, 'configs', 'quickstart')
VLLAMA = osp.join(QS, 'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')
VIT = osp.join(QS, 'vit-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')


def test_variants_per_backbone():
    plain = position_variants(
        dict(type='visionllama_mm.VisionLLaMA', patch_size=7), 28)
    assert list(plain) == ['rope', 'as2drope', 'as2drope-per-axis', 'ntk']
    assert plain['as2drope'] == dict(as_anchor=4, anchor_mode='height')
    assert plain['ntk'](2.)['rope_cfg'] == dict(ntk_alpha=2.)
    one_d = position_variants(
        dict(type='VisionLLaMA', patch_size=7, rope_cfg=dict(mode='1d')), 28)
    assert one_d['ntk'](1.5)['rope_cfg'] == dict(mode='1d', ntk_alpha=1.5)
    mixed = position_variants(
        dict(type='VisionLLaMA', rope_cfg=dict(mode='mixed')), 224)
    assert 'ntk' not in mixed
    pyr = position_variants(
        dict(type='visionllama_mm.PyramidVisionLLaMA'), 224)
    assert pyr['as2drope'] == dict(
        auto_scale=True, as_base_size=[56, 28, 14, 7])
    vit = position_variants(dict(type='VisionTransformer'), 224)
    assert vit['learned-pe-bicubic'] == dict(interpolate_mode='bicubic')
    assert backbone_kind(dict(type='mmpretrain.DeiT3')) == 'vit'
    assert list(position_variants(dict(type='ResNet'), 224)) == ['as-is']


def test_mmpretrain_deit_config_pipeline():
    """mmpretrain's own DeiT config: its ViT and its ImageNet pipeline."""
    from mmengine.hub import get_config
    cfg = get_config('mmpretrain::deit/deit-tiny_4xb256_in1k.py')
    bb = cfg.model.backbone
    assert backbone_kind(bb) == 'vit'
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline_size(pipeline) == 224
    scaled = scale_pipeline(pipeline, 1.5, 16)
    sizes = {t['type']: t for t in scaled}
    assert sizes['ResizeEdge']['scale'] == 384
    assert sizes['CenterCrop']['crop_size'] == 336
    assert pipeline_size(scaled) == 336
    assert pipeline_size(pipeline) == 224  # the input is not modified


def test_format_table():
    rows = [
        dict(size=28, scale=1., variant='a', top1=90.),
        dict(size=28, scale=1., variant='b', top1=80.5),
        dict(size=56, scale=2., variant='a', top1=50.)
    ]
    text = format_table(rows)
    assert text.splitlines()[0] == '| input | a | b |'
    assert '| 28 px (1x) | 90.00 | 80.50 |' in text
    assert '| 56 px (2x) | 50.00 | - |' in text


@pytest.mark.parametrize('config,variants', [
    (VLLAMA, ['rope', 'as2drope', 'as2drope-per-axis', 'ntk']),
    (VIT, ['learned-pe-bicubic', 'learned-pe-bilinear']),
])
def test_tool_end_to_end(tmp_path, config, variants):
    """An untrained checkpoint, one test batch per size: table, PNG, JSON."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import visionllama_mm  # noqa: F401
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    proc = subprocess.run([
        sys.executable, TOOL, config,
        str(ckpt), '--sizes', '28', '56', '--max-batches', '1', '--out-dir',
        str(tmp_path)
    ],
                          capture_output=True,
                          text=True,
                          cwd=ROOT,
                          env=dict(
                              __import__('os').environ,
                              PYTHONPATH=ROOT,
                              OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = osp.splitext(osp.basename(config))[0]
    rows = json.loads((tmp_path / f'{name}_resolution.json').read_text())
    assert (tmp_path / f'{name}_resolution.png').stat().st_size > 0
    assert [r['variant'] for r in rows] == variants * 2
    assert [r['size']
            for r in rows] == [28] * len(variants) + [56] * len(variants)
    assert '| 56 px (2x) |' in proc.stdout
    at_train = [r['top1'] for r in rows if r['size'] == 28]
    # at the training size every scheme is the trained one
    assert len(set(at_train)) == 1

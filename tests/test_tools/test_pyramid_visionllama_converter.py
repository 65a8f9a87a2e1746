"""Converter tests: official deit-format pyramid files -> our faces
(docs/pyramid.md#checkpoint-layout).

Synthetic official-shaped weights, converted, loaded into the mmpretrain
classifier and the mmseg / mmdet backbone, must match the reference forward
written from the docs (``tests/test_backbones/pyramid_reference.py``).
"""
import argparse
import os.path as osp
import sys

import pytest
import torch
from tool_utils import ROOT, load_tool

from visionllama_mm.backbones.pyramid_vision_llama import PyramidVisionLLaMADET
from visionllama_mm.compat import UnsafeCheckpointError

sys.path.insert(0, osp.join(ROOT, 'tests', 'test_backbones'))
import pyramid_reference as ref  # noqa: E402


def load_converter():
    return load_tool(
        'tools/model_converters/pyramid_visionllama_to_mmpretrain.py')


TINY = ref.TINY


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """A deit-format checkpoint as the official training script saves it."""
    sd = ref.arch_state_dict(TINY)
    path = tmp_path_factory.mktemp('ckpt') / 'best_checkpoint.pth'
    torch.save(
        {
            'model':
            sd,
            'optimizer': {
                'state': {},
                'param_groups': [{
                    'lr': 1e-5,
                    'weight_decay': 0.05
                }]
            },
            'lr_scheduler': {
                'base_values': [1e-3]
            },
            'epoch':
            299,
            'scaler': {
                'scale': 65536.0
            },
            'args':
            argparse.Namespace(
                model='pllama_wols_small_patch16', drop_path=0.2, lr=1e-3),
        }, path)
    return sd, str(path)


def test_mmpretrain_classifier_parity(official, tmp_path):
    pytest.importorskip('mmpretrain.models')
    from mmpretrain.registry import MODELS
    sd, src = official
    tool = load_converter()
    dst = str(tmp_path / 'cls.pth')
    tool.main([src, dst])
    converted = torch.load(dst, weights_only=True)  # tensors only
    assert converted['meta']['upstream_model'] == 'pllama_wols_small_patch16'
    assert converted['meta']['epoch'] == 299
    assert 'head.fc.weight' in converted['state_dict']
    x = torch.randn(1, 3, 160, 128)  # non-square, padded LSA windows
    for key_pos in ('official', 'centroid'):
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='visionllama_mm.PyramidVisionLLaMA',
                    arch=TINY,
                    out_type='avg_featmap',
                    gsa_key_pos=key_pos),
                head=dict(
                    type='LinearClsHead', num_classes=10,
                    in_channels=128))).eval()
        model.load_state_dict(converted['state_dict'], strict=True)
        with torch.no_grad():
            got = model(x, mode='tensor')
            want = ref.arch_forward(sd, x, TINY, key_pos=key_pos)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize('key_pos', ['official', 'centroid'])
def test_dense_backbone_parity(official, tmp_path, key_pos):
    """Backbone file -> PyramidVisionLLaMADET (AS2DRoPE, norm_list)."""
    sd, src = official
    tool = load_converter()
    dst = str(tmp_path / 'backbone.pth')
    tool.main([src, dst, '--format', 'backbone'])
    keys = torch.load(dst, weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in keys)
    assert 'backbone.norm.weight' not in keys
    model = PyramidVisionLLaMADET(
        TINY,
        gsa_key_pos=key_pos,
        init_cfg=dict(type='Pretrained', checkpoint=dst, prefix='backbone.'))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        got = model(x)
        want = ref.arch_forward(
            sd, x, TINY, key_pos=key_pos, auto_scale=True, dense=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_timm_format_and_mmengine_input(official, tmp_path):
    sd, src = official
    tool = load_converter()
    timm_file = str(tmp_path / 'timm.pth')
    tool.main([src, timm_file, '--format', 'timm'])
    timm_sd = torch.load(timm_file, weights_only=True)['state_dict']
    assert timm_sd.keys() == sd.keys()
    # an mmengine-format file of ours converts back to the same weights
    cls_file = str(tmp_path / 'cls.pth')
    tool.main([src, cls_file])
    again = str(tmp_path / 'again.pth')
    tool.main([cls_file, again, '--format', 'timm'])
    again_sd = torch.load(again, weights_only=True)['state_dict']
    assert again_sd.keys() == sd.keys()
    for k in sd:
        torch.testing.assert_close(again_sd[k], sd[k], atol=0, rtol=0)


class _Payload:
    """Would run code when unpickled by an unrestricted loader."""

    def __reduce__(self):
        return (print, ('unpickled arbitrary code', ))


def test_refuses_arbitrary_pickles(official, tmp_path):
    sd, _ = official
    tool = load_converter()
    src = str(tmp_path / 'evil.pth')
    torch.save({'model': sd, 'payload': _Payload()}, src)
    with pytest.raises(UnsafeCheckpointError):
        tool.main([src, str(tmp_path / 'out.pth')])
    assert not osp.exists(tmp_path / 'out.pth')


def test_no_weights_is_an_error(tmp_path):
    tool = load_converter()
    src = str(tmp_path / 'empty.pth')
    torch.save({'epoch': 3, 'args': argparse.Namespace(model='x')}, src)
    with pytest.raises(ValueError, match='no weights found'):
        tool.main([src, str(tmp_path / 'out.pth')])

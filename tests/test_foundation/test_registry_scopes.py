"""Configs of mmpretrain / mmseg / mmdet scope build `visionllama_mm.X`."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope

from visionllama_mm.registry import MODELS


@MODELS.register_module(force=True)
class FoundationDummyBackbone(BaseModule):
    """A conv backbone returning a tuple of one NCHW map."""

    def __init__(self, channels: int = 8, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return (self.conv(x), )


def _library_models(scope):
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS as lib_models
    elif scope == 'mmseg':
        from mmseg.registry import MODELS as lib_models
    else:
        from mmdet.registry import MODELS as lib_models
    return lib_models


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_library_registry_builds_prefixed_type(scope):
    lib_models = _library_models(scope)
    module = lib_models.build(
        dict(type='visionllama_mm.FoundationDummyBackbone', channels=4))
    assert type(module) is FoundationDummyBackbone
    assert module.conv.out_channels == 4


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_default_scope_builds_prefixed_type(scope):
    # what the Runner does: the root registry under the config's scope
    _library_models(scope)
    with DefaultScope.overwrite_default_scope(scope):
        assert DefaultScope.get_current_instance().scope_name == scope
        module = MMENGINE_MODELS.build(
            dict(type='visionllama_mm.FoundationDummyBackbone'))
    assert type(module) is FoundationDummyBackbone


def test_nested_in_library_model():
    """An mmpretrain ImageClassifier config with our backbone."""
    lib_models = _library_models('mmpretrain')
    # the Runner's situation: mmpretrain is the default scope (another
    # test may have left a different scope current)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = lib_models.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='visionllama_mm.FoundationDummyBackbone', channels=8),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead',
                    num_classes=5,
                    in_channels=8,
                    loss=dict(type='CrossEntropyLoss'))))
    assert type(model.backbone) is FoundationDummyBackbone
    logits = model(torch.randn(2, 3, 16, 16), mode='tensor')
    assert logits.shape == (2, 5)


def test_unknown_prefixed_type_is_an_error():
    lib_models = _library_models('mmdet')
    with pytest.raises(KeyError, match='NoSuchModule'):
        lib_models.build(dict(type='visionllama_mm.NoSuchModule'))

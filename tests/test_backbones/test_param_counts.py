"""Parameter counts of every plain arch equal the official models.

Counts of docs/visionllama.md#arch-table-and-parameter-counts (mmpretrain
style: patch embed, class token, blocks and final norm; no ``pos_embed``) and
docs/visionllama.md#plain-model-deit-style (deit style, with the 1000-class
head). Built on the meta device, so no memory is allocated.
"""
import pytest
import torch

from visionllama_mm.backbones import VisionLLaMA, VisionLLaMADeiT


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('arch,rule,millions', [
    ('s', 'mmpretrain', 132.9),
    ('b', 'mmpretrain', 255.7),
    ('base', 'mmpretrain', 255.7),
    ('l', 'mmpretrain', 913.8),
    ('h', 'mmpretrain', 1910.6),
    ('b', 'llama', 85.7),
    ('l', 'llama', 309.4),
])
def test_mmpretrain_style(arch, rule, millions):
    with torch.device('meta'):
        model = VisionLLaMA(
            arch=arch,
            ffn_hidden_rule=rule,
            with_cls_token=True,
            out_type='raw',
            final_norm=True)
    assert round(count(model) / 1e6, 1) == millions


def test_mmpretrain_style_swiglu_width():
    expected = {
        's': 6144,
        'b': 8192,
        'l': 11008,
        'h': 13824,
        'eva-g': 16384,
        'deit-t': 2048,
        'deit-s': 4096,
        'deit-b': 8192,
        'dinov2-g': 16384
    }
    for arch, hidden in expected.items():
        with torch.device('meta'):
            model = VisionLLaMA(arch=arch)
        assert model.ffn_hidden == hidden, arch
        assert model.layers[0].ffn.w12.out_features == 2 * hidden


@pytest.mark.parametrize('arch,hidden,millions', [
    ('small', 1024, 22.0),
    ('base', 2048, 86.4),
    ('large', 2816, 310.3),
])
def test_deit_style(arch, hidden, millions):
    with torch.device('meta'):
        model = VisionLLaMADeiT(arch=arch, num_classes=1000)
    assert model.ffn_hidden == hidden
    assert round(count(model) / 1e6, 1) == millions

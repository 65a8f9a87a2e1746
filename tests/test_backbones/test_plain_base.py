"""What the plain family shares: arch parsing, the init rule, blocks that
take their attention, one checkpointing switch."""
import pytest
import torch

from visionllama_mm.backbones import (LLaMADET, PyramidVisionLLaMA,
                                      VisionLLaMA, VisionLLaMADeiT)
from visionllama_mm.backbones.base import parse_arch
from visionllama_mm.backbones.vitdet_llama import WindowRoPEAttention
from visionllama_mm.layers import RoPEAttention
from visionllama_mm.selfsup import MAELLaMA

TINY = dict(embed_dims=16, num_layers=2, num_heads=2)


def test_parse_arch():
    zoo = {'t': dict(embed_dims=8, num_layers=1, num_heads=2)}
    keys = ('embed_dims', 'num_layers', 'num_heads')
    got = parse_arch('T', zoo, keys)
    assert got == zoo['t'] and got is not zoo['t']
    with pytest.raises(ValueError, match=r"one of \['t'\]"):
        parse_arch('s', zoo, keys)
    with pytest.raises(ValueError, match=r"missing \['num_heads'\]"):
        parse_arch(dict(embed_dims=8, num_layers=1), zoo, keys)
    with pytest.raises(ValueError, match=r"unknown \['depth'\]"):
        parse_arch(dict(zoo['t'], depth=2), zoo, keys, ())
    assert parse_arch(dict(zoo['t'], depth=2), zoo, keys, ('depth', ))
    assert parse_arch(dict(zoo['t'], depth=2), zoo, keys)['depth'] == 2
    # one arch dict serves the plain models; the DeiT one has no FFN width
    arch = dict(TINY, feedforward_channels=64)
    kw = dict(arch=arch, patch_size=4, ffn_type='mlp')
    assert VisionLLaMA(**kw).ffn_hidden == 64
    assert VisionLLaMADeiT(**kw).ffn_hidden == 4 * 16


@pytest.mark.parametrize('cls', [VisionLLaMA, VisionLLaMADeiT, MAELLaMA])
def test_init_cfg_replaces_the_official_init(cls):
    """No init_cfg: the official init; any init_cfg: that alone."""
    torch.manual_seed(0)
    model = cls(arch=TINY, patch_size=4)
    weight = model.layer_list[0].attn.qkv.weight
    with torch.no_grad():
        weight.fill_(3.)
    model.init_weights()  # the official init leaves qkv alone (plain) or
    if cls is VisionLLaMADeiT:  # redraws it (timm)
        assert weight.abs().max() < 1
    else:
        assert torch.all(weight == 3.)
    model = cls(
        arch=TINY,
        patch_size=4,
        init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.))
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.all(m.weight == 0.5), m  # FFNs too: no official


def test_blocks_take_their_attention():
    det = LLaMADET(
        arch=TINY, patch_size=4, window_size=2, window_block_indexes=[0])
    assert type(det.layers[0].attn) is WindowRoPEAttention
    assert type(det.layers[1].attn) is RoPEAttention
    assert det.layers[0].attn.qkv.bias is not None
    det = LLaMADET(
        arch=TINY,
        patch_size=4,
        window_size=2,
        qkv_bias=False,
        window_block_indexes=[1])
    assert det.layers[1].attn.qkv.bias is None
    assert type(det.layers[0].attn) is RoPEAttention


def test_mae_needs_its_class_token():
    with pytest.raises(ValueError, match='with_cls_token=True'):
        MAELLaMA(arch=TINY, with_cls_token=False)
    assert MAELLaMA(
        arch=TINY, patch_size=4,
        drop_path_rate=0.1).layers[1].drop_path.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize('build', [
    lambda: VisionLLaMA(arch=TINY, patch_size=4, with_cp=True),
    lambda: VisionLLaMADeiT(arch=TINY, patch_size=4, with_cp=True),
    lambda: PyramidVisionLLaMA(
        arch=dict(
            embed_dims=[8],
            depths=[2],
            num_heads=[2],
            window_sizes=[2],
            sr_ratios=[2]),
        with_cp=True),
])
def test_one_checkpointing_switch(build):
    model = build()
    assert model.with_cp is True
    model.set_grad_checkpointing(False)
    assert model.with_cp is False

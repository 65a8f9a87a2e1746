"""SimpleFPN (ViTDet neck) and LN2d."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmcv.cnn')

from mmengine.registry import MODELS as ROOT_MODELS  # noqa: E402

from visionllama_mm.necks import LN2d, SimpleFPN  # noqa: E402
from visionllama_mm.necks.ln2d import register_ln2d_in_root  # noqa: E402
from visionllama_mm.registry import MODELS  # noqa: E402


def test_ln2d_numerics():
    torch.manual_seed(0)
    ln = LN2d(8)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    ref = F.layer_norm(
        x.permute(0, 2, 3, 1), (8, ), ln.weight, ln.bias,
        eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)
    mean = x.mean(1, keepdim=True)
    var = ((x - mean)**2).mean(1, keepdim=True)
    manual = (x - mean) / torch.sqrt(var + 1e-6)
    manual = manual * ln.weight[:, None, None] + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), manual)
    with pytest.raises(ValueError, match='N, C, H, W'):
        ln(torch.randn(2, 8))


@pytest.mark.parametrize('scope', [None, 'mmdet', 'mmseg', 'visionllama_mm'])
def test_ln2d_found_by_mmcv_norm_builder(scope):
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import DefaultScope
    if scope in ('mmdet', 'mmseg'):
        pytest.importorskip(scope)
        __import__(f'{scope}.registry')
    assert ROOT_MODELS.module_dict['LN2d'] is LN2d
    assert MODELS.get('LN2d') is LN2d
    assert register_ln2d_in_root() is False  # idempotent
    name = f'ln2d_scope_{scope}'
    ctx = DefaultScope.get_instance(name, scope_name=scope) if scope else None
    try:
        abbr, layer = build_norm_layer(
            dict(type='LN2d', requires_grad=True), 16)
    finally:
        if ctx is not None:
            DefaultScope._instance_dict.pop(name, None)
    assert isinstance(layer, LN2d) and abbr == 'norm_layer'
    assert layer.weight.shape == (16, )


def test_simple_fpn_shapes_and_names():
    neck = MODELS.build(
        dict(
            type='SimpleFPN',
            backbone_channel=64,
            in_channels=[16, 32, 64, 64],
            out_channels=24,
            num_outs=5,
            norm_cfg=dict(type='LN2d', requires_grad=True)))
    x = torch.randn(2, 64, 8, 12)
    outs = neck((x, ))
    assert [tuple(o.shape) for o in outs] == [(2, 24, 32, 48), (2, 24, 16, 24),
                                              (2, 24, 8, 12), (2, 24, 4, 6),
                                              (2, 24, 2, 3)]
    torch.testing.assert_close(neck(x)[0], outs[0])  # bare tensor input
    keys = set(neck.state_dict())
    for key in ('fpn1.0.weight', 'fpn1.1.weight', 'fpn1.3.weight',
                'fpn2.0.weight', 'lateral_convs.0.conv.weight',
                'lateral_convs.0.norm_layer.weight', 'fpn_convs.3.conv.weight',
                'fpn_convs.3.norm_layer.bias'):
        assert key in keys, key
    # no conv bias next to a norm; no activation; GELU inside fpn1
    assert neck.lateral_convs[0].conv.bias is None
    assert not neck.fpn_convs[0].with_activation
    assert isinstance(neck.fpn1[2], torch.nn.GELU)
    # the extra level is a stride-2 subsample of the last level
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])
    outs[0].sum().backward()


def test_simple_fpn_bad_args():
    with pytest.raises(ValueError, match='in_channels'):
        SimpleFPN(64, [16, 32, 64], 8, 5)
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(64, [16, 32, 64, 64], 8, 3)
    with pytest.raises(ValueError, match='divisible by 4'):
        SimpleFPN(66, [16, 33, 66, 66], 8, 5)

"""The one PatchEmbed: checkpoint names, optional norm, size policy."""
import pytest
import torch
import torch.nn.functional as F

from visionllama_mm.layers import PatchEmbed, tokens_to_featmap


@pytest.mark.parametrize('conv_name', ['proj', 'projection'])
def test_tokens_are_the_strided_conv_in_raster_order(conv_name):
    pe = PatchEmbed(3, 8, 4, conv_name=conv_name)
    assert set(pe.state_dict()) == {f'{conv_name}.weight', f'{conv_name}.bias'}
    x = torch.randn(2, 3, 8, 12)
    tokens, hw = pe(x)
    conv = getattr(pe, conv_name)
    ref = F.conv2d(x, conv.weight, conv.bias, stride=4)  # (2, 8, 2, 3)
    assert hw == (2, 3)
    torch.testing.assert_close(tokens_to_featmap(tokens, hw), ref)
    torch.testing.assert_close(tokens[:, 1], ref[:, :, 0, 1])


def test_norm_and_floored_sizes():
    pe = PatchEmbed(
        3, 8, 4, conv_name='proj', norm_eps=1e-5, strict_size=False)
    assert {'proj.weight', 'norm.weight', 'norm.bias'} <= set(pe.state_dict())
    x = torch.randn(1, 3, 10, 9)  # floored to a 2 x 2 grid
    tokens, hw = pe(x)
    assert hw == (2, 2)
    ref = F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=4)
    ref = F.layer_norm(
        ref.flatten(2).transpose(1, 2), (8, ), pe.norm.weight, pe.norm.bias,
        1e-5)
    torch.testing.assert_close(tokens, ref)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match='conv_name must be one of'):
        PatchEmbed(conv_name='conv')
    with pytest.raises(TypeError, match='patch_size'):
        PatchEmbed(patch_size=2.)
    with pytest.raises(ValueError, match='patch_size=4'):
        PatchEmbed(3, 8, 4)(torch.randn(1, 3, 10, 8))

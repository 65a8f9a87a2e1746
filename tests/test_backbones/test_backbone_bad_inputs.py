"""Bad input to every backbone: a correct result or a ValueError / TypeError
that names the argument, the value and what is allowed; no raw torch
error."""
import pytest
import torch

from visionllama_mm.backbones.pyramid_vision_llama import PyramidVisionLLaMA
from visionllama_mm.backbones.vision_llama import VisionLLaMA
from visionllama_mm.backbones.vision_llama_deit import VisionLLaMADeiT
from visionllama_mm.backbones.vitdet_llama import LLaMADET
from visionllama_mm.generation.models import (DiTLLaMA, SiTLLaMA,
                                              build_generator)
from visionllama_mm.selfsup.mae_llama import MAELLaMA

PLAIN = dict(embed_dims=32, num_layers=2, num_heads=2)
PYRAMID = dict(
    embed_dims=[16, 32, 48, 64],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 3, 4],
    window_sizes=[7, 7, 7, 7],
    sr_ratios=[8, 4, 2, 1])
GEN = dict(
    input_size=8,
    patch_size=2,
    in_channels=4,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_classes=10)


def _image_call(model, x):
    return model(x)


def _gen_call(model, x):
    n = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else 0
    return model(x, torch.rand(n) * 999, torch.randint(0, 10, (n, )))


# name: (class, kwargs, in_channels, patch (None: sizes are floored),
#        smallest input side, call)
BACKBONES = {
    'plain': (VisionLLaMA, dict(arch=PLAIN, img_size=32,
                                patch_size=8), 3, 8, 8, _image_call),
    'deit': (VisionLLaMADeiT, dict(arch=PLAIN, img_size=32,
                                   patch_size=8), 3, 8, 8, _image_call),
    'pyramid':
    (PyramidVisionLLaMA, dict(arch=PYRAMID), 3, None, 32, _image_call),
    'vitdet':
    (LLaMADET, dict(arch=PLAIN, img_size=32, patch_size=8,
                    window_size=2), 3, 8, 8, _image_call),
    'mae': (MAELLaMA, dict(arch=PLAIN, img_size=32,
                           patch_size=8), 3, 8, 8, _image_call),
    'dit': (DiTLLaMA, GEN, 4, 2, 2, _gen_call),
    'sit': (SiTLLaMA, GEN, 4, 2, 2, _gen_call),
}
NAMES = sorted(BACKBONES)
ARG = {'dit': 'x', 'sit': 'x'}  # the image argument's name


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    built = {}
    for name, (cls, kwargs, *_) in BACKBONES.items():
        model = cls(**kwargs)
        model.eval()
        built[name] = model
    return built


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _run(models, name, x):
    with torch.no_grad():
        return BACKBONES[name][5](models[name], x)


def _image(name, b=2, c=None, h=32, w=32, dtype=torch.float32):
    c = BACKBONES[name][2] if c is None else c
    return torch.randn(b, c, h, w).to(dtype)


def _raises(models, name, x, exc, *fragments):
    with pytest.raises(exc) as info:
        _run(models, name, x)
    message = str(info.value)
    for fragment in (ARG.get(name, 'inputs'), ) + fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize('name', NAMES)
def test_good_input(models, name):
    out = _first(_run(models, name, _image(name)))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize('name', NAMES)
def test_wrong_channels(models, name):
    c = BACKBONES[name][2]
    _raises(models, name, _image(name, c=c + 2), ValueError,
            f'{c + 2} channels', f'in_channels={c}')


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('shape', [(3, 32, 32), (2, 3, 32, 32, 1), (32, )])
def test_wrong_rank(models, name, shape):
    _raises(models, name, torch.randn(*shape), ValueError, '(B, C, H, W)',
            str(tuple(shape)))


@pytest.mark.parametrize('name', NAMES)
def test_empty_batch(models, name):
    _raises(models, name, _image(name, b=0), ValueError, 'batch size 0')


@pytest.mark.parametrize('name', NAMES)
def test_too_small(models, name):
    smallest = BACKBONES[name][4]
    side = smallest - 1 if smallest > 1 else 1
    message = _raises(models, name, _image(name, h=side, w=smallest),
                      ValueError, f'{side}x{smallest}')
    assert 'too small' in message or 'divisible' in message


@pytest.mark.parametrize('name', NAMES)
def test_not_divisible_by_patch(models, name):
    patch = BACKBONES[name][3]
    if patch is None:  # pyramid: floors like the official code
        out = _first(_run(models, name, _image(name, h=45, w=39)))
        assert out.shape[0] == 2 and torch.isfinite(out).all()
        return
    size = 32 + patch // 2 if patch > 1 else 33
    _raises(models, name, _image(name, h=size, w=32), ValueError, f'{size}x32',
            f'patch_size={patch}')


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('tall', [True, False])
def test_extreme_aspect_ratio(models, name, tall):
    short = BACKBONES[name][4]
    if name == 'pyramid':
        short = 32
    long = short * 16
    h, w = (long, short) if tall else (short, long)
    out = _first(_run(models, name, _image(name, b=1, h=h, w=w)))
    assert out.shape[0] == 1 and torch.isfinite(out).all()


@pytest.mark.parametrize('name', NAMES)
def test_nan_propagates(models, name):
    x = _image(name)
    x[0] = float('nan')
    out = _first(_run(models, name, x))  # no data-dependent check
    assert torch.isnan(out[0]).any() and torch.isfinite(out[1]).all()


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('dtype', [torch.uint8, torch.int64, torch.bool])
def test_integer_dtype(models, name, dtype):
    _raises(models, name,
            _image(name).abs().to(dtype), TypeError, 'floating-point',
            str(dtype))


@pytest.mark.parametrize('name', NAMES)
def test_not_a_tensor(models, name):
    x = _image(name).numpy()
    _raises(models, name, x, TypeError, 'torch.Tensor', 'ndarray')


@pytest.mark.parametrize('name', ['dit', 'sit'])
def test_generator_conditions(models, name):
    model, x = models[name], _image(name)
    with pytest.raises(ValueError, match=r't \(timesteps\) must have shape'):
        model(x, torch.rand(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match=r'y \(class labels\).*float32'):
        model(x, torch.rand(2), torch.zeros(2))
    with pytest.raises(TypeError, match=r'y \(labels\) must be a tensor'):
        model(x, torch.rand(2), [1, 2])


# ------------------------------------------------------------- constructor
WITH_OUT_INDICES = ['plain', 'deit', 'pyramid', 'vitdet', 'mae']


@pytest.mark.parametrize('name', WITH_OUT_INDICES)
@pytest.mark.parametrize('value, exc, fragment', [
    (True, TypeError, 'True'),
    ([], ValueError, 'empty'),
    ('last', TypeError, "'last'"),
    ([0, 'a'], TypeError, "'a'"),
    ([0.5], TypeError, '0.5'),
    ([99], ValueError, '99'),
])
def test_bad_out_indices(name, value, exc, fragment):
    cls, kwargs = BACKBONES[name][:2]
    with pytest.raises(exc) as info:
        cls(**kwargs, out_indices=value)
    message = str(info.value)
    assert 'out_indices' in message and fragment in message, message
    assert 'non-empty sequence of ints' in message, message


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('value, exc', [(0, ValueError), (-3, ValueError),
                                        (1.5, TypeError), ('3', TypeError)])
def test_bad_in_channels(name, value, exc):
    cls, kwargs = BACKBONES[name][:2]
    with pytest.raises(exc) as info:
        cls(**dict(kwargs, in_channels=value))
    message = str(info.value)
    assert 'in_channels' in message and str(value) in message, message
    assert '>= 1' in message, message


@pytest.mark.parametrize('name', ['plain', 'deit', 'pyramid', 'vitdet', 'mae'])
@pytest.mark.parametrize('arch', ['no-such-arch', dict(embed_dims=32), 7])
def test_bad_arch(name, arch):
    cls, kwargs = BACKBONES[name][:2]
    with pytest.raises((ValueError, TypeError)) as info:
        cls(**dict(kwargs, arch=arch))
    assert 'arch' in str(info.value)


def test_bad_generator_name():
    with pytest.raises(
            ValueError,
            match=r"model name must be one of .*"
            r"'DiTLLaMA_B_4'.*got 'DiT-huge'"):
        build_generator('DiT-huge')


def test_out_indices_accepts_ints_and_sequences():
    cls, kwargs = BACKBONES['plain'][:2]
    assert cls(**kwargs, out_indices=-1).out_indices == [1]
    assert cls(**kwargs, out_indices=(0, -1)).out_indices == [0, 1]

"""Registered DiT-LLaMA / SiT-LLaMA models: build, loss, sampling, VAE."""
import subprocess
import sys

import pytest
import torch

from visionllama_mm.registry import MODELS

NET = dict(
    input_size=8,
    patch_size=2,
    in_channels=1,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_classes=10,
    cfg_channels=None)


def build(kind, **kw):
    net = dict(NET, learn_sigma=(kind == 'DiTLLaMA'))
    net.update(kw.pop('net', {}))
    return MODELS.build(dict(type=f'visionllama_mm.{kind}', arch=net, **kw))


def samples(n=4):
    return [dict(gt_label=i % 10) for i in range(n)]


def test_import_does_not_import_mmagic():
    code = ('import sys, visionllama_mm, visionllama_mm.generation; '
            "bad = [m for m in ('mmagic', 'mmdet', 'mmseg') "
            'if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('kind', ['DiTLLaMA', 'SiTLLaMA'])
def test_build_and_loss(kind):
    model = build(kind)
    assert model.__class__.__name__ == kind + 'Model'
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    losses = model(x, samples(), mode='loss')
    if kind == 'DiTLLaMA':
        assert set(losses) == {'loss', 'mse', 'vb'}
        torch.testing.assert_close(losses['loss'],
                                   losses['mse'] + losses['vb'])
    else:
        assert set(losses) == {'loss'}
    losses['loss'].backward()
    assert model.net.final_layer.linear.weight.grad.abs().sum() > 0
    # the parsed loss sums only keys containing 'loss'
    parsed, log_vars = model.parse_losses(losses)
    torch.testing.assert_close(parsed, losses['loss'])
    assert set(log_vars) == set(losses)


def test_dit_predict_xstart_reaches_loss_and_sampler():
    """predict_xstart=True: the zero-initialised network predicts x_0 = 0,
    so the MSE is E[x_0^2] whatever the noise, and the last DDPM step
    returns the predicted x_0 = 0 exactly."""
    model = build('DiTLLaMA', predict_xstart=True, net=dict(learn_sigma=False))
    assert model.diffusion.predict_xstart
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    losses = model(x, samples(), mode='loss')
    assert set(losses) == {'loss', 'mse'}
    torch.testing.assert_close(losses['mse'], (x**2).mean())
    out = model.sample([0, 1], seed=0, num_steps=5)
    assert out.shape == (2, 1, 8, 8) and out.abs().max() == 0
    # the default (official) predicts the noise: the samples are not 0
    assert build('DiTLLaMA').sample([0, 1], seed=0,
                                    num_steps=5).abs().max() > 0


def test_named_arch_and_validation():
    with torch.device('meta'):
        m = MODELS.build(
            dict(
                type='visionllama_mm.SiTLLaMA',
                arch='SiTLLaMA_S_2',
                net_cfg=dict(num_classes=1000)))
    assert m.net.hidden_size == 384 and len(m.net.blocks) == 12
    with pytest.raises(ValueError, match='arch must name a DiTLLaMA'):
        MODELS.build(dict(type='visionllama_mm.DiTLLaMA', arch='SiTLLaMA_B_2'))
    with pytest.raises(ValueError, match='mode must be one of'):
        build('SiTLLaMA').sample([1], mode='euler')
    with pytest.raises(ValueError, match='mode must be one of'):
        build('SiTLLaMA')(torch.zeros(1, 1, 8, 8), samples(1), mode='x')


@pytest.mark.parametrize('kind,kw', [
    ('DiTLLaMA', dict(num_steps=5)),
    ('DiTLLaMA', dict(num_steps=5, cfg_scale=3.)),
    ('SiTLLaMA', dict(num_steps=5)),
    ('SiTLLaMA', dict(num_steps=5, cfg_scale=3.)),
    ('SiTLLaMA', dict(mode='ode', method='euler', num_steps=4)),
])
def test_sampling_shapes_and_determinism(kind, kw):
    model = build(kind)
    torch.manual_seed(0)
    for p in model.parameters():  # leave the zero init behind
        p.data.normal_(0, 0.05)
    model.train()
    a = model.sample([0, 1, 2], seed=3, **kw)
    b = model.sample([0, 1, 2], seed=3, **kw)
    c = model.sample([0, 1, 2], seed=4, **kw)
    assert a.shape == (3, 1, 8, 8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)
    assert model.training  # restored after sampling


def test_predict_returns_data_samples():
    pytest.importorskip('mmagic')
    model = build('SiTLLaMA', sample_cfg=dict(num_steps=3))
    outs = model(torch.zeros(2, 1, 8, 8), samples(2), mode='predict')
    assert len(outs) == 2
    assert outs[0].fake_img.shape == (1, 8, 8)
    assert 0 <= outs[0].fake_img.min() and outs[0].fake_img.max() <= 255
    assert int(outs[1].gt_label.label) == 1


def test_latent_space_with_a_local_vae(tmp_path):
    diffusers = pytest.importorskip('diffusers')
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=('DownEncoderBlock2D', 'DownEncoderBlock2D'),
        up_block_types=('UpDecoderBlock2D', 'UpDecoderBlock2D'),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16)
    vae.save_pretrained(tmp_path / 'vae')  # a local folder, no download
    model = build(
        'DiTLLaMA',
        net=dict(in_channels=4, input_size=8, cfg_channels=3),
        vae=dict(path=str(tmp_path / 'vae'), scale_factor=0.18215))
    # the VAE is not part of the module tree / checkpoints / EMA
    assert not any('vae' in k for k in model.state_dict())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 4, 8, 8)
    losses = model(x, samples(2), mode='loss')
    assert torch.isfinite(losses['loss'])
    img = model.sample([3, 4], seed=0, num_steps=2)
    assert img.shape == (2, 3, 16, 16)


@pytest.mark.parametrize('kind,kw', [
    ('DiTLLaMA', dict(num_steps=4, cfg_scale=3.)),
    ('DiTLLaMA', dict(num_steps='ddim4', sampler='ddim', eta=0.5)),
    ('SiTLLaMA', dict(num_steps=4, cfg_scale=3.)),
    ('SiTLLaMA', dict(num_steps=4, method='Heun')),
])
def test_per_sample_generators_batch_independent(kind, kw):
    """With one generator per sample (the distributed sampler), a sample
    is the same alone or in a batch, with or without guidance."""
    model = build(kind)
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.05)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = model.sample([0, 1, 2], generator=gens([10, 11, 12]), **kw)
    alone = model.sample([1], generator=gens([11]), **kw)
    # equal up to float rounding: a GEMM's blocking depends on the batch
    # size, and guidance (scale 3) amplifies those ~1e-6 differences
    torch.testing.assert_close(batch[1:2], alone, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match='one per sample'):
        model.sample([0, 1], generator=gens([1]), **kw)
    with pytest.raises(ValueError, match='seed or generator'):
        model.sample([0], seed=1, generator=gens([1]), **kw)


def test_ddim_through_the_model():
    """DDIM with eta 0 is deterministic given the initial noise."""
    model = build('DiTLLaMA')
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    noise = torch.randn(2, 1, 8, 8)
    a = model.sample([0, 1],
                     seed=1,
                     noise=noise,
                     num_steps='ddim10',
                     sampler='ddim')
    b = model.sample([0, 1],
                     seed=2,
                     noise=noise,
                     num_steps='ddim10',
                     sampler='ddim')
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = model.sample([0, 1], seed=2, noise=noise, num_steps=10)  # DDPM
    assert not torch.allclose(a, c)

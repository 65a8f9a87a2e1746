"""DiT Gaussian diffusion: schedule, respacing, hybrid loss, DDPM sampler."""
import math

import pytest
import torch

from visionllama_mm.generation.diffusion import (GaussianDiffusion,
                                                 create_diffusion,
                                                 linear_beta_schedule,
                                                 space_timesteps)


def test_linear_schedule():
    b = linear_beta_schedule(1000)
    assert b.dtype == torch.float64 and b.shape == (1000, )
    assert b[0].item() == pytest.approx(1e-4)
    assert b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], (b[1] - b[0]).expand(999))
    # rescaled for other lengths: 1000 / T
    assert linear_beta_schedule(100)[0].item() == pytest.approx(1e-3)


def test_space_timesteps():
    keep = space_timesteps(1000, '250')
    stride = 999 / 249
    assert keep == sorted({round(i * stride) for i in range(250)})
    assert len(keep) == 250 and keep[0] == 0 and keep[-1] == 999
    assert space_timesteps(1000, 250) == keep
    assert space_timesteps(100, 'ddim10') == list(range(0, 100, 10))
    assert space_timesteps(300, '10,15,20')[:2] == [0, 11]
    assert len(space_timesteps(300, [10, 15, 20])) == 45
    with pytest.raises(ValueError, match='cannot divide'):
        space_timesteps(10, '20')


def test_respaced_process_keeps_cumulative_products():
    base = create_diffusion('')
    assert base.num_timesteps == 1000
    assert base.timestep_map.tolist() == list(range(1000))
    torch.testing.assert_close(base.betas, linear_beta_schedule(1000))
    spaced = create_diffusion('250')
    keep = space_timesteps(1000, 250)
    assert spaced.num_timesteps == 250
    assert spaced.timestep_map.tolist() == keep
    torch.testing.assert_close(spaced.alphas_cumprod,
                               base.alphas_cumprod[keep])
    assert spaced.var_type == 'learned_range'
    assert create_diffusion('10', learn_sigma=False).var_type == 'fixed_large'
    with pytest.raises(ValueError, match='noise_schedule'):
        create_diffusion('', noise_schedule='cosine')
    with pytest.raises(ValueError, match='var_type'):
        GaussianDiffusion(linear_beta_schedule(10), var_type='learned')


def test_posterior_tables_match_formulas():
    d = create_diffusion('')
    b = d.betas
    ac = torch.cumprod(1 - b, 0)
    acp = torch.cat([torch.ones(1, dtype=b.dtype), ac[:-1]])
    var = b * (1 - acp) / (1 - ac)
    torch.testing.assert_close(d.posterior_variance, var)
    assert d.posterior_log_variance_clipped[0] == var[1].log()
    torch.testing.assert_close(d.posterior_log_variance_clipped[1:],
                               var[1:].log())


class Spy:
    """Records the timesteps the network sees; returns fixed outputs."""

    def __init__(self, out_fn):
        self.ts = []
        self.out_fn = out_fn

    def __call__(self, x, t, **kwargs):
        self.ts.append(t.clone())
        return self.out_fn(x, t, **kwargs)


def test_network_sees_original_timesteps():
    d = create_diffusion('10')
    spy = Spy(
        lambda x, t: torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:]))
    d.p_sample_loop(spy, (2, 1, 2, 2), generator=torch.Generator())
    seen = [int(t[0]) for t in spy.ts]
    assert seen == space_timesteps(1000, 10)[::-1]
    assert len(seen) == 10


def test_hybrid_loss_matches_formula():
    torch.manual_seed(0)
    d = create_diffusion('')
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 999])
    eps_pred = torch.randn_like(x0, requires_grad=True)
    v = (torch.rand_like(x0) * 2 - 1).requires_grad_()

    def model(x, ts):
        return torch.cat([eps_pred, v], dim=1)

    terms = d.training_losses(model, x0, t, noise)
    mse = ((noise - eps_pred)**2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms['mse'], mse)
    # vb written out for t > 0: KL(q posterior || p) in bits
    b = d.betas
    ac = torch.cumprod(1 - b, 0)
    acp = torch.cat([torch.ones(1, dtype=b.dtype), ac[:-1]])
    for i in (1, 2):
        ti = int(t[i])
        xt = ac[ti].sqrt() * x0[i] + (1 - ac[ti]).sqrt() * noise[i]
        c1 = b[ti] * acp[ti].sqrt() / (1 - ac[ti])
        c2 = (1 - acp[ti]) * (1 - b[ti]).sqrt() / (1 - ac[ti])
        true_mean = c1 * x0[i] + c2 * xt
        true_logvar = (b[ti] * (1 - acp[ti]) / (1 - ac[ti])).log()
        x0_hat = (xt - (1 - ac[ti]).sqrt() * eps_pred[i]) / ac[ti].sqrt()
        mean = c1 * x0_hat + c2 * xt
        frac = (v[i] + 1) / 2
        logvar = frac * b[ti].log() + (1 - frac) * true_logvar
        kl = 0.5 * (-1 + logvar - true_logvar + (true_logvar - logvar).exp() +
                    (true_mean - mean)**2 * (-logvar).exp())
        expected = kl.mean() / math.log(2)
        assert terms['vb'][i].item() == pytest.approx(
            expected.item(), rel=1e-4)
    assert terms['vb'][0] > 0  # decoder NLL at t = 0
    torch.testing.assert_close(terms['loss'], terms['mse'] + terms['vb'])
    # the bound trains only the variance: no vb gradient into eps
    eps_pred.grad = None
    terms['vb'].sum().backward()
    assert eps_pred.grad is None or eps_pred.grad.abs().max() == 0
    assert v.grad.abs().max() > 0


def test_fixed_variance_has_mse_only():
    d = create_diffusion('', learn_sigma=False)
    x0 = torch.randn(2, 1, 2, 2)
    terms = d.training_losses(lambda x, t: torch.zeros_like(x), x0)
    assert set(terms) == {'loss', 'mse'}
    with pytest.raises(ValueError, match='output channels'):
        create_diffusion('10').p_mean_variance(
            lambda x, t: x, x0, torch.zeros(2, dtype=torch.long))


def oracle_eps(d, c):
    """Exact eps for data concentrated at c (x_t = sqrt(ab) c + ...)."""

    def model(x, ts):
        ab = d_base.alphas_cumprod[ts].float().view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * c) / (1 - ab).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    d_base = create_diffusion('')
    return model


@pytest.mark.parametrize('respacing', ['250', '25'])
def test_sampler_recovers_point_mass(respacing):
    d = create_diffusion(respacing)
    c = torch.tensor([0.5, -0.25]).view(1, 2, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = d.p_sample_loop(oracle_eps(d, c), (4, 2, 1, 1), generator=g)
    torch.testing.assert_close(out, c.expand(4, 2, 1, 1), atol=1e-3, rtol=0)


def mixture_oracle(data, predict_xstart):
    """Exact E[x_0 | x_t] of a uniform mixture of point masses at ``data``
    (as eps or as x_0), with a zero variance channel."""
    base = create_diffusion('')

    def model(x, ts):
        ab = base.alphas_cumprod[ts].float().view(-1, 1)
        x_, d_ = x.flatten(1), data.flatten(1)
        d2 = ((x_[:, None] - ab.sqrt()[:, None] * d_[None])**2).sum(-1)
        w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)  # (N, K)
        x0 = (w @ d_).view_as(x)
        ab = ab.view(-1, 1, 1, 1)
        out = x0 if predict_xstart else (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return torch.cat([out, torch.zeros_like(out)], dim=1)

    return model


@pytest.mark.parametrize('predict_xstart', [False, True])
@pytest.mark.parametrize('respacing', ['1000', '50'])
def test_sampler_with_exact_model_returns_data_points(predict_xstart,
                                                      respacing):
    """With the exact posterior mean of a 4-point data set, ancestral
    sampling from noise lands on the data points, in both
    parameterisations (checks the tables, the respacing, the timestep map
    fed to the model and the eps / x_0 conversions together)."""
    torch.manual_seed(0)
    data = torch.rand(4, 1, 3, 3) * 2 - 1
    d = create_diffusion(respacing, predict_xstart=predict_xstart)
    assert d.predict_xstart is predict_xstart
    out = d.p_sample_loop(
        mixture_oracle(data, predict_xstart), (32, 1, 3, 3),
        generator=torch.Generator().manual_seed(1))
    err = ((out[:, None] - data[None])**2).flatten(2).mean(-1)
    assert err.min(1).values.max() < 1e-6
    # all four points are reached
    assert set(err.argmin(1).tolist()) == {0, 1, 2, 3}


def test_xstart_prediction_loss_and_posterior():
    """predict_xstart (DiT's create_diffusion option): the MSE regresses
    x_0, the sampler uses the output as x_0 and the two parameterisations
    give the same p(x_{t-1} | x_t) for corresponding outputs."""
    torch.manual_seed(0)
    d_eps = create_diffusion('')
    d_x0 = create_diffusion('', predict_xstart=True)
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 999])
    x0_pred = torch.rand_like(x0) * 2 - 1
    v = torch.rand_like(x0) * 2 - 1
    terms = d_x0.training_losses(lambda x, ts: torch.cat([x0_pred, v], 1), x0,
                                 t, noise)
    torch.testing.assert_close(terms['mse'],
                               ((x0 - x0_pred)**2).mean(dim=(1, 2, 3)))
    x_t = d_x0.q_sample(x0, t, noise)
    eps = d_eps.predict_eps_from_xstart(x_t, t, x0_pred)
    ab = d_eps.alphas_cumprod[t].view(-1, 1, 1, 1)  # float64
    expected = (x_t.double() - ab.sqrt() * x0_pred) / (1 - ab).sqrt()
    torch.testing.assert_close(eps.double(), expected, rtol=1e-4, atol=1e-4)
    a = d_x0.p_mean_variance_from_output(torch.cat([x0_pred, v], 1), x_t, t)
    b = d_eps.p_mean_variance_from_output(torch.cat([eps, v], 1), x_t, t)
    torch.testing.assert_close(a['pred_xstart'], x0_pred)
    for k in ('mean', 'log_variance', 'pred_xstart', 'eps'):
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    # the same bound, with the mean detached
    eps_terms = d_eps.training_losses(lambda x, ts: torch.cat([eps, v], 1), x0,
                                      t, noise)
    torch.testing.assert_close(
        terms['vb'], eps_terms['vb'], atol=1e-4, rtol=1e-4)


def test_sampler_is_deterministic_given_seed():
    d = create_diffusion('20')

    def model(x, t):
        return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)

    a = d.p_sample_loop(
        model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    b = d.p_sample_loop(
        model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    c = d.p_sample_loop(
        model, (2, 3, 4, 4), generator=torch.Generator().manual_seed(8))
    assert a.shape == (2, 3, 4, 4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_schedule_agrees_with_mmagic_ddpm_scheduler():
    """Our float64 tables equal mmagic's DDPM scheduler (which lacks the
    respacing and the hybrid loss, hence diffusion.py)."""
    schedulers = pytest.importorskip('mmagic.models.diffusion_schedulers')
    s = schedulers.EditDDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule='linear',
        variance_type='learned_range')
    d = create_diffusion('')
    torch.testing.assert_close(d.betas, torch.as_tensor(s.betas).double())
    torch.testing.assert_close(d.alphas_cumprod,
                               torch.as_tensor(s.alphas_cumprod).double())


# ---------------------------------------------------------------- DDIM
def gaussian_eps_oracle(m, s):
    """Exact E[eps | x_t] for data x_0 ~ N(m, s^2) (noise prediction)."""
    base = create_diffusion('')

    def model(x, ts):
        ab = base.alphas_cumprod[ts].view(-1, 1, 1, 1)
        var = ab * s**2 + 1 - ab
        eps = (1 - ab).sqrt() / var * (x.double() - ab.sqrt() * m)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1).to(x.dtype)

    return model


@pytest.mark.parametrize('predict_xstart', [False, True])
@pytest.mark.parametrize('respacing', ['ddim50', '25'])
def test_ddim_eta0_lands_on_data_points(predict_xstart, respacing):
    """Deterministic DDIM with the exact posterior mean of a 4-point data
    set ends on the data points, from any noise."""
    torch.manual_seed(0)
    data = torch.rand(4, 1, 3, 3) * 2 - 1
    d = create_diffusion(respacing, predict_xstart=predict_xstart)
    noise = torch.randn(32, 1, 3, 3)
    out = d.p_sample_loop(
        mixture_oracle(data, predict_xstart),
        noise.shape,
        noise=noise,
        sampler='ddim')
    err = ((out[:, None] - data[None])**2).flatten(2).mean(-1)
    assert err.min(1).values.max() < 1e-6
    assert set(err.argmin(1).tolist()) == {0, 1, 2, 3}
    # deterministic: no generator needed, same noise -> same samples
    again = d.p_sample_loop(
        mixture_oracle(data, predict_xstart),
        noise.shape,
        noise=noise,
        sampler='ddim',
        generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, again, atol=0, rtol=0)


def test_ddim_eta0_is_the_probability_flow_of_a_gaussian():
    """For x_0 ~ N(m, s^2) the exact flow maps x_T to m + s x_T (up to the
    tiny mean left at T); DDIM with the exact eps converges to it at first
    order (it shrinks the spread slightly at every step)."""
    m, s = 0.3, 0.5
    x = torch.randn(500, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    ab_T = create_diffusion('').alphas_cumprod[-1]
    v_T = ab_T * s**2 + 1 - ab_T
    exact = m + s * (x.double() - ab_T.sqrt() * m) / v_T.sqrt()
    errs = []
    for steps in ('50', '200'):
        out = create_diffusion(steps).p_sample_loop(
            gaussian_eps_oracle(m, s), x.shape, noise=x, sampler='ddim')
        errs.append((out.double() - exact).abs().max().item())
    # 4x the steps, 1/4 of the error (measured 0.115 -> 0.029)
    assert errs[0] / errs[1] == pytest.approx(4, rel=0.1)
    assert errs[1] < 0.04


@pytest.mark.parametrize('eta', [0.5, 1.])
def test_ddim_with_noise_samples_the_gaussian(eta):
    m, s = 0.3, 0.5
    g = torch.Generator().manual_seed(0)
    out = create_diffusion('100').p_sample_loop(
        gaussian_eps_oracle(m, s), (4000, 1, 1, 1),
        generator=g,
        sampler='ddim',
        eta=eta)
    assert out.mean().item() == pytest.approx(m, abs=0.03)
    assert out.std().item() == pytest.approx(s, rel=0.08)


def test_ddim_eta1_is_ddpm_with_posterior_variance():
    """eta = 1: the DDIM step equals the ancestral step with the posterior
    ('fixed_small') variance, noise for noise."""
    d = create_diffusion('20')
    small = GaussianDiffusion(d.betas, d.timestep_map, var_type='fixed_small')
    x = torch.randn(3, 2, 4, 4)

    def model(x, t):
        return torch.cat([0.3 * x, torch.zeros_like(x)], dim=1)

    for i in (19, 7, 1):
        t = torch.full((3, ), i)
        a = d.ddim_sample(
            model, x, t, generator=torch.Generator().manual_seed(i),
            eta=1.)['sample']
        b = small.p_sample(
            lambda x, t: model(x, t)[:, :2],
            x,
            t,
            generator=torch.Generator().manual_seed(i))['sample']
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='sampler'):
        d.p_sample_loop(model, (1, 2, 4, 4), sampler='euler')
    with pytest.raises(ValueError, match='eta'):
        d.p_sample_loop(model, (1, 2, 4, 4), sampler='ddim', eta=-1)


def test_per_sample_generators_make_samples_batch_independent():
    """With one generator per sample, a sample is the same alone or in a
    batch (the distributed sampler relies on this)."""
    from visionllama_mm.generation.diffusion import randn
    d = create_diffusion('10')

    def model(x, t):
        return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)

    def gens(idx):
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    both = d.p_sample_loop(model, (2, 1, 4, 4), generator=gens([0, 1]))
    one = d.p_sample_loop(model, (1, 1, 4, 4), generator=gens([1]))
    torch.testing.assert_close(both[1:], one, atol=0, rtol=0)
    # CFG doubles the rows: the draws repeat
    r = randn((4, 3), gens([0, 1]))
    torch.testing.assert_close(r[:2], r[2:])
    with pytest.raises(ValueError, match='multiple'):
        randn((3, 2), gens([0, 1]))

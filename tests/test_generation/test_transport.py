"""SiT transports: paths, predictions, losses, SDE and ODE samplers, each
checked against the exact answer for Gaussian data."""
import math

import pytest
import torch

from visionllama_mm.generation.transport import (GVPPath, LinearPath,
                                                 Transport, VPPath)

M, S = 1.5, 0.5  # data x1 ~ N(M, S^2), noise x0 ~ N(0, 1)


def gaussian_velocity(x, t, **kwargs):
    """Exact E[x1 - x0 | x_t] for Gaussian data (jointly Gaussian)."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    var = t**2 * S**2 + (1 - t)**2
    r = x - t * M
    e_x1 = M + t * S**2 / var * r
    e_x0 = (1 - t) / var * r
    return e_x1 - e_x0


def test_plan_and_score():
    path = LinearPath()
    x0, x1 = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    t = torch.tensor([0., 0.3, 1.])
    xt, ut = path.plan(t, x0, x1)
    tt = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, tt * x1 + (1 - tt) * x0)
    torch.testing.assert_close(ut, x1 - x0)
    # score of p_t = N(t M, t^2 S^2 + (1 - t)^2) from the exact velocity
    x = torch.randn(4, 1, 1, 1)
    t = torch.tensor([0., 0.2, 0.5, 0.9])
    tt = t.view(-1, 1, 1, 1)
    score = -(x - tt * M) / (tt**2 * S**2 + (1 - tt)**2)
    torch.testing.assert_close(
        path.score_from_velocity(gaussian_velocity(x, t), x, t), score)


def test_diffusion_forms():
    path = LinearPath()
    x = torch.zeros(2, 1)
    t = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(
        path.diffusion(x, t, 'sigma', 2.), 2 * (1 - t).view(-1, 1))
    torch.testing.assert_close(
        path.diffusion(x, t, 'constant', 0.5), torch.full((2, 1), 0.5))
    sbdm = (1 / t) * (1 - t)**2 + (1 - t)
    torch.testing.assert_close(path.diffusion(x, t, 'SBDM'), sbdm.view(-1, 1))
    with pytest.raises(ValueError, match='diffusion_form'):
        path.diffusion(x, t, 'cosine')


def test_velocity_loss():
    tr = Transport()
    x1 = torch.randn(3, 2, 4, 4)
    x0 = torch.randn_like(x1)
    t = torch.tensor([0.1, 0.5, 0.9])
    seen = {}

    def model(x, tt, y=None):
        seen['t'], seen['y'] = tt, y
        return torch.zeros_like(x)

    out = tr.training_losses(model, x1, t, x0, model_kwargs=dict(y=5))
    torch.testing.assert_close(out['loss'], ((x1 - x0)**2).mean((1, 2, 3)))
    torch.testing.assert_close(seen['t'], t)  # t in [0, 1] goes to the net
    assert seen['y'] == 5
    t_rand = tr.training_losses(model, x1)['loss']
    assert t_rand.shape == (3, )
    with pytest.raises(ValueError, match='must match'):
        tr.training_losses(lambda x, t: x[:, :1], x1)
    with pytest.raises(ValueError, match='path'):
        Transport(path='cosine')
    with pytest.raises(ValueError, match='prediction'):
        Transport(prediction='x0')
    with pytest.raises(ValueError, match='loss_weight'):
        Transport(prediction='noise', loss_weight='snr')


def test_sde_official_schedule_calls():
    """250 time points on [0, 0.96]: 249 EM steps + the Mean last step."""
    tr = Transport()
    ts = []

    def model(x, t):
        ts.append(float(t[0]))
        return torch.zeros_like(x)

    tr.sample_sde(model, torch.zeros(1, 1, 1, 1))
    assert len(ts) == 250
    assert ts[0] == 0. and ts[-1] == pytest.approx(0.96)
    assert ts[-2] == pytest.approx(0.96 - 0.96 / 249, abs=1e-6)
    with pytest.raises(ValueError, match='last_step'):
        tr.sample_sde(model, torch.zeros(1, 1), last_step='Last')
    with pytest.raises(ValueError, match='method'):
        tr.sample_sde(model, torch.zeros(1, 1), method='RK4')


@pytest.mark.parametrize('kw', [
    dict(),
    dict(method='Heun', num_steps=100),
    dict(last_step='Euler'),
    dict(last_step=None, num_steps=200, diffusion_form='linear'),
])
def test_sde_samples_the_data_distribution(kw):
    tr = Transport()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 1, 1, 1, generator=g)
    out = tr.sample_sde(gaussian_velocity, x0, generator=g, **kw)
    assert out.shape == x0.shape
    assert out.mean().item() == pytest.approx(M, abs=0.05)
    assert out.std().item() == pytest.approx(S, rel=0.12)


def test_ode_dopri5_transports_noise_to_data():
    tr = Transport()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2000, 1, 1, 1, generator=g)
    # the exact 1-D flow is the monotone map x1 = M + S x0
    out = tr.sample_ode(gaussian_velocity, x0)  # official atol / rtol
    assert (out - (M + S * x0)).abs().max() < 0.05
    tight = tr.sample_ode(gaussian_velocity, x0, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(tight, M + S * x0, atol=1e-4, rtol=0)
    euler = tr.sample_ode(gaussian_velocity, x0, num_steps=50, method='euler')
    assert (euler - (M + S * x0)).abs().max() < 0.1


def test_sde_determinism():
    tr = Transport()

    def model(x, t):
        return -x

    x = torch.randn(2, 3, 4, 4)
    a = tr.sample_sde(
        model, x, num_steps=20, generator=torch.Generator().manual_seed(1))
    b = tr.sample_sde(
        model, x, num_steps=20, generator=torch.Generator().manual_seed(1))
    c = tr.sample_sde(
        model, x, num_steps=20, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- all paths
PATH_NAMES = ['linear', 'GVP', 'VP']
PRED_NAMES = ['velocity', 'score', 'noise']


def coeffs(path, t):
    """alpha, sigma and their derivatives, written out per path."""
    if path == 'linear':
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)
    if path == 'GVP':
        h = math.pi / 2
        return (torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t),
                -h * torch.sin(h * t))
    lm = -0.25 * (1 - t)**2 * 19.9 - 0.5 * (1 - t) * 0.1
    dlm = 0.5 * (1 - t) * 19.9 + 0.05
    a = lm.exp()
    s = (1 - a**2).sqrt()
    return a, s, a * dlm, -a**2 * dlm / s


def gaussian_oracle(path, prediction):
    """The exact minimiser of each loss for x1 ~ N(M, S^2):
    E[u_t | x_t], E[x0 | x_t] or the score of p_t."""

    def model(x, t, **kwargs):
        t = t.view(-1, *([1] * (x.dim() - 1))).double()
        a, s, da, ds = coeffs(path, t)
        var = a**2 * S**2 + s**2
        r = x.double() - a * M
        e_x1 = M + a * S**2 / var * r
        e_x0 = s / var * r
        if prediction == 'velocity':
            out = da * e_x1 + ds * e_x0
        elif prediction == 'noise':
            out = e_x0
        else:
            out = -r / var
        return out.to(x.dtype)

    return model


@pytest.mark.parametrize('name,cls', [('linear', LinearPath), ('GVP', GVPPath),
                                      ('VP', VPPath)])
def test_path_coefficients(name, cls):
    path = cls()
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    a, s, da, ds = coeffs(name, t)
    got_a, got_da = path.alpha(t)
    got_s, got_ds = path.sigma(t)
    for x, y in ((got_a, a), (got_s, s), (got_da, da), (got_ds, ds)):
        torch.testing.assert_close(
            torch.as_tensor(x, dtype=y.dtype).expand_as(y), y)
    # d alpha / alpha and the drift / diffusion of the score SDE
    torch.testing.assert_close(path.d_alpha_alpha_ratio(t), da / a)
    x = torch.randn(7, dtype=torch.float64)
    drift, g = path.drift_and_var(x, t)
    torch.testing.assert_close(drift, -(da / a) * x)
    torch.testing.assert_close(g, (da / a) * s**2 - s * ds)
    # the derivatives are the derivatives
    h = 1e-6
    torch.testing.assert_close(
        (path.alpha(t + h)[0] - path.alpha(t - h)[0]) / (2 * h),
        da,
        atol=1e-6,
        rtol=1e-6)


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
def test_official_intervals(path, prediction):
    """SiT's create_transport eps and check_interval, per option."""
    tr = Transport(path, prediction)
    stable = prediction == 'velocity' and path != 'VP'
    assert tr.train_eps == (0 if stable else 1e-5 if path == 'VP' else 1e-3)
    assert tr.sample_eps == (0 if stable else 1e-3)
    eps = tr.sample_eps
    ode = tr.interval(sde=False)
    sde = tr.interval(sde=True, diffusion_form='sigma', last_step_size=0.04)
    if path == 'VP':
        assert ode == (0, 1 - eps) and sde == (0, 0.96)
    elif prediction == 'velocity':
        assert ode == (0, 1) and sde == (0, 0.96)
        assert tr.interval(
            sde=True, diffusion_form='SBDM',
            last_step_size=0.04) == (eps, 0.96)
    else:
        assert ode == (eps, 1 - eps) and sde == (eps, 0.96)
    train = tr.interval(eval=False)
    if path == 'VP':
        assert train == (0, 1 - 1e-5)
    elif prediction == 'velocity':
        assert train == (0, 1)
    else:
        assert train == (1e-3, 1 - 1e-3)
    seen = []
    tr.training_losses(lambda x, t: seen.append(t) or x, torch.zeros(4096, 1))
    assert train[0] <= seen[0].min() and seen[0].max() < train[1]


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
@pytest.mark.parametrize('weight', [None, 'velocity', 'likelihood'])
def test_losses_match_formulas(path, prediction, weight):
    if prediction == 'velocity' and weight is not None:
        pytest.skip('weights apply to score / noise predictions only')
    tr = Transport(path, prediction, loss_weight=weight)
    torch.manual_seed(0)
    x1, x0 = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    t = torch.tensor([0.2, 0.5, 0.8])
    out = torch.randn_like(x1)
    got = tr.training_losses(lambda x, tt: out, x1, t, x0)['loss']
    tt = t.view(-1, 1, 1, 1)
    a, s, da, ds = coeffs(path, tt)
    if prediction == 'velocity':
        expected = (out - (da * x1 + ds * x0))**2
    else:
        g = (da / a) * s**2 - s * ds
        w = {None: 1, 'velocity': (g / s)**2, 'likelihood': g / s**2}[weight]
        err = out - x0 if prediction == 'noise' else out * s + x0
        expected = w * err**2
    torch.testing.assert_close(
        got, expected.mean((1, 2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
def test_oracle_minimises_loss(path, prediction):
    """The analytic E[target | x_t] has a lower loss than a perturbed one."""
    tr = Transport(path, prediction)
    g = torch.Generator().manual_seed(0)
    x1 = M + S * torch.randn(20000, 1, generator=g)
    x0 = torch.randn(20000, 1, generator=g)
    t = torch.rand(20000, generator=g) * 0.8 + 0.1
    oracle = gaussian_oracle(path, prediction)
    best = tr.training_losses(oracle, x1, t, x0)['loss'].mean()
    worse = tr.training_losses(lambda x, tt: 1.1 * oracle(x, tt) + 0.05, x1, t,
                               x0)['loss'].mean()
    assert best < worse


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
def test_every_option_converts_to_the_same_flow(path, prediction):
    """Velocity and score from any prediction equal the exact ones."""
    tr = Transport(path, prediction)
    x = torch.randn(5, 1, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    v, s = tr.velocity_and_score(gaussian_oracle(path, prediction)(x, t), x, t)
    torch.testing.assert_close(v, gaussian_oracle(path, 'velocity')(x, t))
    torch.testing.assert_close(s, gaussian_oracle(path, 'score')(x, t))


def exact_map(path, x, t0, t1):
    """The 1-D probability flow of Gaussian data between two times: an
    affine map of the standardised value."""
    a0, s0, _, _ = coeffs(path, torch.tensor(t0, dtype=torch.float64))
    a1, s1, _, _ = coeffs(path, torch.tensor(t1, dtype=torch.float64))
    v0, v1 = a0**2 * S**2 + s0**2, a1**2 * S**2 + s1**2
    return a1 * M + (v1 / v0).sqrt() * (x.double() - a0 * M)


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
def test_ode_dopri5_is_the_exact_flow(path, prediction):
    tr = Transport(path, prediction)
    x = torch.randn(
        200, 1, 1, 1, generator=torch.Generator().manual_seed(0)).double()
    out = tr.sample_ode(
        gaussian_oracle(path, prediction),
        x,
        num_steps=2,
        atol=1e-8,
        rtol=1e-7)
    t0, t1 = tr.interval(sde=False)
    torch.testing.assert_close(
        out.double(), exact_map(path, x, t0, t1), atol=2e-4, rtol=0)


@pytest.mark.parametrize('method', ['Euler', 'Heun', 'euler', 'heun2'])
def test_ode_fixed_grid_solvers_converge(method):
    """First order (Euler) and second order (Heun): halving the step
    halves / quarters the error against the exact flow."""
    tr = Transport('GVP')
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    model = gaussian_oracle('GVP', 'velocity')
    exact = exact_map('GVP', x, 0., 1.)
    errs = [(tr.sample_ode(model, x.double(), num_steps=n + 1, method=method) -
             exact).abs().max().item() for n in (20, 40)]
    order = math.log2(errs[0] / errs[1])
    assert order == pytest.approx(
        1 if method.lower() == 'euler' else 2, abs=0.3)


@pytest.mark.parametrize('path', PATH_NAMES)
@pytest.mark.parametrize('prediction', PRED_NAMES)
@pytest.mark.parametrize('method', ['Euler', 'Heun'])
def test_sde_samples_the_data_for_every_option(path, prediction, method):
    """Official SDE settings (sigma diffusion, Mean last step), fewer
    steps: the samples have the data's mean and standard deviation."""
    tr = Transport(path, prediction)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=g)
    out = tr.sample_sde(
        gaussian_oracle(path, prediction),
        x,
        num_steps=100 if method == 'Euler' else 50,
        method=method,
        generator=g)
    assert out.mean().item() == pytest.approx(M, abs=0.05)
    assert out.std().item() == pytest.approx(S, rel=0.12)

"""SiT linear transport: plan, score, loss, SDE (Euler-Maruyama) and ODE."""
import pytest
import torch

from visionllama_mm.generation.transport import LinearPath, Transport

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
        Transport(path='GVP')
    with pytest.raises(ValueError, match='prediction'):
        Transport(prediction='noise')


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

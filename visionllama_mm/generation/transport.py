"""SiT's stochastic interpolant: linear path, velocity loss, SDE/ODE samplers.

Pure-torch re-implementation of the transport SiT-LLaMA trains and samples
with (``spec-visionllama.md`` §6.3; SiT, Ma et al., arXiv 2401.08740):

* the *linear* interpolant ``x_t = t x_1 + (1 - t) x_0`` between noise
  ``x_0 ~ N(0, I)`` (t = 0) and data ``x_1`` (t = 1), with
  ``alpha_t = t`` and ``sigma_t = 1 - t``;
* a velocity-predicting network trained with
  ``|| v(x_t, t) - (x_1 - x_0) ||^2`` (no weighting), t ~ U[0, 1);
* the score from the velocity, ``s = (t v - x) / (1 - t)``;
* an Euler-Maruyama (or Heun) solver of the reverse SDE
  ``dx = [v + w(t) s] dt + sqrt(2 w(t)) dW`` with diffusion coefficient
  ``w`` (official sampling: ``'sigma'`` form ``w = 1 - t``, norm 1, 250
  steps on ``[0, 1 - 0.04]`` and a final deterministic ``'Mean'`` step of
  size 0.04);
* the probability-flow ODE ``dx = v dt`` solved by an adaptive solver
  (torchdiffeq ``dopri5``, atol 1e-6, rtol 1e-3).
"""
import math
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from visionllama_mm.utils import check_choice
from .diffusion import mean_flat

__all__ = ['LinearPath', 'Transport', 'DIFFUSION_FORMS', 'LAST_STEPS']

DIFFUSION_FORMS = ('constant', 'SBDM', 'sigma', 'linear', 'decreasing',
                   'increasing-decreasing')
LAST_STEPS = (None, 'Mean', 'Euler', 'Tweedie')
SDE_METHODS = ('Euler', 'Heun')
PREDICTIONS = ('velocity', )
PATHS = ('linear', )

ModelFn = Callable[..., Tensor]


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """(N, ) times to a shape broadcastable against x (N, ...)."""
    return t.view(-1, *([1] * (x.dim() - 1)))


class LinearPath:
    """Linear interpolant ``x_t = t x_1 + (1 - t) x_0`` (SiT ``ICPlan``)."""

    @staticmethod
    def alpha(t: Tensor):
        """Data coefficient alpha_t and its derivative."""
        return t, 1.

    @staticmethod
    def sigma(t: Tensor):
        """Noise coefficient sigma_t and its derivative."""
        return 1 - t, -1.

    def plan(self, t: Tensor, x0: Tensor, x1: Tensor):
        """Return (x_t, u_t), u_t = d x_t / dt the target velocity."""
        te = _expand(t, x1)
        (a, da), (s, ds) = self.alpha(te), self.sigma(te)
        return a * x1 + s * x0, da * x1 + ds * x0

    def drift_and_var(self, x: Tensor, t: Tensor):
        """Drift mean ``-(d log alpha) x`` and variance of the score SDE."""
        te = _expand(t, x)
        s, ds = self.sigma(te)
        ratio = 1 / te  # d alpha / alpha
        return -ratio * x, ratio * s**2 - s * ds

    def diffusion(self,
                  x: Tensor,
                  t: Tensor,
                  form: str = 'sigma',
                  norm: float = 1.) -> Tensor:
        """Diffusion coefficient w(t) of the sampling SDE."""
        check_choice('diffusion_form', form, DIFFUSION_FORMS)
        te = _expand(t, x)
        if form == 'constant':
            return torch.full_like(te, norm)
        if form == 'SBDM':
            return norm * self.drift_and_var(x, t)[1]
        if form == 'sigma':
            return norm * self.sigma(te)[0]
        if form == 'linear':
            return norm * (1 - te)
        if form == 'decreasing':
            return 0.25 * (norm * torch.cos(math.pi * te) + 1)**2
        return norm * torch.sin(math.pi * te)**2

    def score_from_velocity(self, v: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """Score of p_t from the velocity: ``(t v - x) / (1 - t)``."""
        te = _expand(t, x)
        (a, da), (s, ds) = self.alpha(te), self.sigma(te)
        ratio = a / da
        var = s**2 - ratio * ds * s
        return (ratio * v - x) / var


class Transport:
    """Training loss and samplers of SiT's linear velocity transport.

    Args:
        path (str): Interpolant; only ``'linear'`` (SiT-LLaMA). Defaults to
            ``'linear'``.
        prediction (str): Network output; only ``'velocity'``. Defaults to
            ``'velocity'``.
        train_eps (float): Margin of the training time interval. Defaults
            to 0 (SiT's value for linear velocity models).
        sample_eps (float): Margin of the sampling interval. Defaults to 0.
    """

    def __init__(self,
                 path: str = 'linear',
                 prediction: str = 'velocity',
                 train_eps: float = 0.,
                 sample_eps: float = 0.) -> None:
        check_choice('path', path, PATHS)
        check_choice('prediction', prediction, PREDICTIONS)
        self.path = LinearPath()
        self.train_eps = train_eps
        self.sample_eps = sample_eps

    # ----------------------------------------------------------- training
    def training_losses(self,
                        model: ModelFn,
                        x1: Tensor,
                        t: Optional[Tensor] = None,
                        x0: Optional[Tensor] = None,
                        model_kwargs: Optional[dict] = None
                        ) -> Dict[str, Tensor]:
        """Per-sample velocity loss ``mean_flat((v - u_t) ** 2)``.

        Args:
            model (callable): ``model(x_t, t, **model_kwargs)`` -> velocity.
            x1 (Tensor): Data (N, C, H, W).
            t (Tensor, optional): Times (N, ); defaults to
                U[train_eps, 1 - train_eps).
            x0 (Tensor, optional): Noise; defaults to N(0, I).
            model_kwargs (dict, optional): Extra network arguments.

        Returns:
            dict[str, Tensor]: ``loss`` (N, ) and ``pred``.
        """
        if x0 is None:
            x0 = torch.randn_like(x1)
        if t is None:
            t0, t1 = self.train_eps, 1 - self.train_eps
            t = torch.rand(x1.shape[0], device=x1.device) * (t1 - t0) + t0
        t = t.to(x1)
        xt, ut = self.path.plan(t, x0, x1)
        pred = model(xt, t, **(model_kwargs or {}))
        if pred.shape != xt.shape:
            raise ValueError(f'the network output {tuple(pred.shape)} must '
                             f'match the input {tuple(xt.shape)}')
        return dict(loss=mean_flat((pred - ut)**2), pred=pred)

    # ----------------------------------------------------------- sampling
    def _sde_interval(self, diffusion_form: str, last_step: Optional[str],
                      last_step_size: float):
        # SiT ``check_interval(sde=True, eval=True)`` for velocity models
        eps = self.sample_eps
        t0 = eps if diffusion_form == 'SBDM' else 0.
        t1 = 1 - eps if (last_step is None
                         or last_step_size == 0) else 1 - last_step_size
        return t0, t1

    @torch.no_grad()
    def sample_sde(self,
                   model: ModelFn,
                   x_init: Tensor,
                   num_steps: int = 250,
                   method: str = 'Euler',
                   diffusion_form: str = 'sigma',
                   diffusion_norm: float = 1.,
                   last_step: Optional[str] = 'Mean',
                   last_step_size: float = 0.04,
                   model_kwargs: Optional[dict] = None,
                   generator: Optional[torch.Generator] = None,
                   progress: bool = False) -> Tensor:
        """Integrate the reverse SDE from noise (t = 0) towards data (t = 1).

        ``num_steps`` time points are spaced on [t0, t1]; the solver takes
        ``num_steps - 1`` stochastic steps, then the deterministic last step
        (so the official setting evaluates the network 250 times).

        Args:
            model (callable): ``model(x, t, **model_kwargs)`` -> velocity.
            x_init (Tensor): Initial noise x_0.
            num_steps (int): Time points. Defaults to 250.
            method (str): ``'Euler'`` (Euler-Maruyama) or ``'Heun'``.
                Defaults to ``'Euler'``.
            diffusion_form (str): One of :data:`DIFFUSION_FORMS`.
                Defaults to ``'sigma'``.
            diffusion_norm (float): Scale of the diffusion. Defaults to 1.
            last_step (str, optional): ``'Mean'`` (x + sde_drift * h),
                ``'Euler'`` (x + v * h), ``'Tweedie'`` or None.
                Defaults to ``'Mean'``.
            last_step_size (float): h. Defaults to 0.04.
            model_kwargs (dict, optional): Extra network arguments.
            generator (torch.Generator, optional): RNG of the Brownian
                increments.
            progress (bool): Show a tqdm bar. Defaults to False.

        Returns:
            Tensor: Final samples.
        """
        check_choice('method', method, SDE_METHODS)
        check_choice('diffusion_form', diffusion_form, DIFFUSION_FORMS)
        check_choice('last_step', last_step, LAST_STEPS)
        if num_steps < 2:
            raise ValueError(f'num_steps must be >= 2, got {num_steps}')
        if last_step is None:
            last_step_size = 0.
        kwargs = model_kwargs or {}
        t0, t1 = self._sde_interval(diffusion_form, last_step, last_step_size)
        ts = torch.linspace(t0, t1, num_steps)
        dt = (ts[1] - ts[0]).item()

        def diffusion(x, t):
            return self.path.diffusion(x, t, diffusion_form, diffusion_norm)

        def drift(x, t):  # probability-flow drift = the velocity
            return model(x, t, **kwargs)

        def sde_drift(x, t):
            v = drift(x, t)
            return v + diffusion(x, t) * self.path.score_from_velocity(v, x, t)

        x = x_init
        steps = ts[:-1].tolist()
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps)
        for ti in steps:
            t = torch.full((x.shape[0], ), ti, device=x.device, dtype=x.dtype)
            w = torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype)
            dw = w * math.sqrt(dt)
            if method == 'Euler':
                x = x + sde_drift(x, t) * dt + torch.sqrt(
                    2 * diffusion(x, t)) * dw
            else:  # Heun
                xhat = x + torch.sqrt(2 * diffusion(x, t)) * dw
                k1 = sde_drift(xhat, t)
                xp = xhat + dt * k1
                k2 = sde_drift(xp, t + dt)
                x = xhat + 0.5 * dt * (k1 + k2)
        t = torch.full((x.shape[0], ), t1, device=x.device, dtype=x.dtype)
        if last_step == 'Mean':
            x = x + sde_drift(x, t) * last_step_size
        elif last_step == 'Euler':
            x = x + drift(x, t) * last_step_size
        elif last_step == 'Tweedie':
            a = self.path.alpha(_expand(t, x))[0]
            s = self.path.sigma(_expand(t, x))[0]
            score = self.path.score_from_velocity(drift(x, t), x, t)
            x = x / a + s**2 / a * score
        return x

    @torch.no_grad()
    def sample_ode(self,
                   model: ModelFn,
                   x_init: Tensor,
                   num_steps: int = 250,
                   method: str = 'dopri5',
                   atol: float = 1e-6,
                   rtol: float = 1e-3,
                   model_kwargs: Optional[dict] = None) -> Tensor:
        """Solve the probability-flow ODE ``dx/dt = v`` from t = 0 to 1.

        Uses ``torchdiffeq.odeint`` (imported lazily). For adaptive methods
        ``num_steps`` only sets the points the solution is reported at (the
        official sampler passes 250); the step size is adaptive.

        Args:
            model (callable): ``model(x, t, **model_kwargs)`` -> velocity.
            x_init (Tensor): Initial noise.
            num_steps (int): Reported time points. Defaults to 250.
            method (str): torchdiffeq method (``'dopri5'``, ``'euler'``,
                ``'heun3'``, ...). Defaults to ``'dopri5'``.
            atol (float): Absolute tolerance. Defaults to 1e-6.
            rtol (float): Relative tolerance. Defaults to 1e-3.
            model_kwargs (dict, optional): Extra network arguments.

        Returns:
            Tensor: Final samples.
        """
        try:
            from torchdiffeq import odeint
        except ImportError as e:  # pragma: no cover
            raise ImportError('the ODE sampler needs torchdiffeq: '
                              '`pip install torchdiffeq`') from e
        kwargs = model_kwargs or {}
        # SiT ``check_interval(sde=False)``: velocity models use [0, 1]
        t = torch.linspace(0., 1., max(num_steps, 2)).to(x_init)

        def fn(ti, x):
            tt = torch.full((x.shape[0], ),
                            float(ti),
                            device=x.device,
                            dtype=x.dtype)
            return model(x, tt, **kwargs)

        return odeint(fn, x_init, t, method=method, atol=atol, rtol=rtol)[-1]

"""SiT's stochastic interpolants: paths, predictions, losses, SDE/ODE samplers.

Pure-torch re-implementation of the transport SiT-LLaMA trains and samples
with (docs/generation.md#training-and-sampling; SiT, Ma et al., arXiv
2401.08740). Time runs from noise ``x_0 ~ N(0, I)`` at t = 0 to data ``x_1`` at
t = 1 and ``x_t = alpha_t x_1 + sigma_t x_0``:

* paths (SiT ``path_type``): ``'linear'`` (alpha = t, sigma = 1 - t, the
  SiT-LLaMA default), ``'GVP'`` (alpha = sin(pi t / 2), sigma =
  cos(pi t / 2)) and ``'VP'`` (alpha = exp(-(1 - t)^2 (b1 - b0) / 4 -
  (1 - t) b0 / 2), sigma = sqrt(1 - alpha^2), b0 = 0.1, b1 = 20);
* predictions: ``'velocity'`` (regress u_t = alpha'_t x_1 + sigma'_t x_0),
  ``'noise'`` (regress x_0) or ``'score'`` (regress -x_0 / sigma_t, loss
  ``|sigma_t s + x_0|^2``), the last two optionally weighted
  (``loss_weight`` ``'velocity'``: (g / sigma)^2, ``'likelihood'``:
  g / sigma^2, with g = (alpha' / alpha) sigma^2 - sigma sigma' the
  diffusion of the score SDE);
* any prediction is turned into the probability-flow velocity
  ``v = (alpha' / alpha) x + g s`` and the score ``s``, so one network
  evaluation per step serves the SDE drift ``v + w(t) s`` (SiT evaluates the
  network twice there, for the same values);
* the reverse SDE ``dx = [v + w s] dt + sqrt(2 w) dW`` by Euler-Maruyama or
  Heun (official sampling: diffusion form ``'sigma'``, norm 1, 250 steps,
  a final deterministic ``'Mean'`` step of size 0.04); the ODE ``dx = v dt``
  by torchdiffeq (``dopri5`` with atol 1e-6, rtol 1e-3, or the fixed-grid
  ``euler`` / ``heun2``);
* SiT's time intervals (``check_interval``): velocity models on the linear
  and GVP paths use [0, 1], other predictions stay ``eps`` away from both
  ends, the VP path from t = 1; ``train_eps`` / ``sample_eps`` default as in
  SiT's ``create_transport`` (0 for velocity on linear / GVP, else 1e-3; the
  VP path trains with 1e-5).
"""
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from visionllama_mm.utils import check_choice
from .diffusion import mean_flat, randn

__all__ = [
    'LinearPath', 'GVPPath', 'VPPath', 'Transport', 'DIFFUSION_FORMS',
    'LAST_STEPS', 'PATHS', 'PREDICTIONS', 'LOSS_WEIGHTS'
]

DIFFUSION_FORMS = ('constant', 'SBDM', 'sigma', 'linear', 'decreasing',
                   'increasing-decreasing')
LAST_STEPS = (None, 'Mean', 'Euler', 'Tweedie')
SDE_METHODS = ('Euler', 'Heun')
# SiT names its fixed-grid ODE solvers after torchdiffeq's
ODE_ALIASES = {'Euler': 'euler', 'Heun': 'heun2'}
PREDICTIONS = ('velocity', 'score', 'noise')
LOSS_WEIGHTS = (None, 'velocity', 'likelihood')

ModelFn = Callable[..., Tensor]
Generator = Union[torch.Generator, Sequence[torch.Generator], None]


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """(N, ) times to a shape broadcastable against x (N, ...)."""
    return t.view(-1, *([1] * (x.dim() - 1)))


class LinearPath:
    """Linear interpolant ``x_t = t x_1 + (1 - t) x_0`` (SiT ``ICPlan``).

    Subclasses change ``alpha`` / ``sigma`` (and, where a closed form is
    more stable, ``d_alpha_alpha_ratio`` / ``drift_and_var``). All methods
    take times already shaped like the data unless they say otherwise.
    """

    def alpha(self, t: Tensor) -> Tuple[Tensor, Union[Tensor, float]]:
        """Data coefficient alpha_t and its derivative."""
        return t, 1.

    def sigma(self, t: Tensor) -> Tuple[Tensor, Union[Tensor, float]]:
        """Noise coefficient sigma_t and its derivative."""
        return 1 - t, -1.

    def d_alpha_alpha_ratio(self, t: Tensor) -> Tensor:
        """alpha'_t / alpha_t."""
        return 1 / t

    def plan(self, t: Tensor, x0: Tensor, x1: Tensor):
        """Return (x_t, u_t) for (N, ) times, u_t = d x_t / dt."""
        te = _expand(t, x1)
        (a, da), (s, ds) = self.alpha(te), self.sigma(te)
        return a * x1 + s * x0, da * x1 + ds * x0

    def drift_and_var(self, x: Tensor, t: Tensor):
        """``-(alpha' / alpha) x`` and the diffusion g of the score SDE,
        ``g = (alpha' / alpha) sigma^2 - sigma sigma'`` ((N, ) times)."""
        te = _expand(t, x)
        s, ds = self.sigma(te)
        ratio = self.d_alpha_alpha_ratio(te)
        return -ratio * x, ratio * s**2 - s * ds

    def diffusion(self,
                  x: Tensor,
                  t: Tensor,
                  form: str = 'sigma',
                  norm: float = 1.) -> Tensor:
        """Diffusion coefficient w(t) of the sampling SDE ((N, ) times)."""
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
        """Score of p_t from the velocity ((N, ) times); on the linear path
        ``(t v - x) / (1 - t)``."""
        te = _expand(t, x)
        (a, da), (s, ds) = self.alpha(te), self.sigma(te)
        ratio = a / da
        var = s**2 - ratio * ds * s
        return (ratio * v - x) / var

    def velocity_from_score(self, score: Tensor, x: Tensor,
                            t: Tensor) -> Tensor:
        """Probability-flow velocity ``(alpha' / alpha) x + g s``."""
        drift, var = self.drift_and_var(x, t)
        return var * score - drift


class GVPPath(LinearPath):
    """Generalised variance-preserving path: alpha = sin(pi t / 2),
    sigma = cos(pi t / 2) (SiT ``GVPCPlan``)."""

    def alpha(self, t):
        return torch.sin(t * math.pi /
                         2), math.pi / 2 * torch.cos(t * math.pi / 2)

    def sigma(self, t):
        return torch.cos(t * math.pi /
                         2), -math.pi / 2 * torch.sin(t * math.pi / 2)

    def d_alpha_alpha_ratio(self, t):
        return math.pi / (2 * torch.tan(t * math.pi / 2))


class VPPath(LinearPath):
    """The VP-SDE of score-based diffusion as an interpolant (SiT
    ``VPCPlan``): ``log alpha = -(1 - t)^2 (b1 - b0) / 4 - (1 - t) b0 / 2``,
    ``sigma = sqrt(1 - alpha^2)``.

    Args:
        sigma_min (float): b0. Defaults to 0.1.
        sigma_max (float): b1. Defaults to 20.
    """

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.) -> None:
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def _log_mean_coeff(self, t):
        return (-0.25 * (1 - t)**2 * (self.sigma_max - self.sigma_min) - 0.5 *
                (1 - t) * self.sigma_min)

    def d_alpha_alpha_ratio(self, t):
        return 0.5 * (1 - t) * (self.sigma_max -
                                self.sigma_min) + 0.5 * self.sigma_min

    def alpha(self, t):
        a = torch.exp(self._log_mean_coeff(t))
        return a, a * self.d_alpha_alpha_ratio(t)

    def sigma(self, t):
        a2 = torch.exp(2 * self._log_mean_coeff(t))
        s = torch.sqrt(1 - a2)
        return s, -a2 * self.d_alpha_alpha_ratio(t) / s

    def drift_and_var(self, x, t):
        # beta_t = b0 + (1 - t)(b1 - b0): drift -beta x / 2, g = beta / 2
        beta = self.sigma_min + (1 - _expand(t, x)) * (
            self.sigma_max - self.sigma_min)
        return -0.5 * beta * x, beta / 2


PATHS = {'linear': LinearPath, 'GVP': GVPPath, 'VP': VPPath}


class Transport:
    """Training loss and samplers of SiT's transports.

    Args:
        path (str): Interpolant, ``'linear'`` (SiT-LLaMA; SiT's
            ``'Linear'`` is accepted too), ``'GVP'`` or ``'VP'``.
            Defaults to ``'linear'``.
        prediction (str): Network output, ``'velocity'``, ``'score'`` or
            ``'noise'``. Defaults to ``'velocity'``.
        loss_weight (str, optional): Weight of the score / noise losses:
            None, ``'velocity'`` or ``'likelihood'``. Defaults to None.
        train_eps (float, optional): Margin of the training times. Defaults
            to None: SiT's value (0 for velocity on linear / GVP, 1e-5 on VP,
            else 1e-3).
        sample_eps (float, optional): Margin of the sampling times. Defaults
            to None: SiT's value (0 for velocity on linear / GVP, else 1e-3).
    """

    def __init__(self,
                 path: str = 'linear',
                 prediction: str = 'velocity',
                 loss_weight: Optional[str] = None,
                 train_eps: Optional[float] = None,
                 sample_eps: Optional[float] = None) -> None:
        path = 'linear' if path == 'Linear' else path
        check_choice('path', path, PATHS)
        check_choice('prediction', prediction, PREDICTIONS)
        check_choice('loss_weight', loss_weight, LOSS_WEIGHTS)
        self.path_type = path
        self.path = PATHS[path]()
        self.prediction = prediction
        self.loss_weight = loss_weight
        stable = prediction == 'velocity' and path != 'VP'
        if train_eps is None:
            train_eps = 0. if stable else (1e-5 if path == 'VP' else 1e-3)
        if sample_eps is None:
            sample_eps = 0. if stable else 1e-3
        self.train_eps = train_eps
        self.sample_eps = sample_eps

    # ----------------------------------------------------------- intervals
    def interval(self,
                 sde: bool = False,
                 eval: bool = True,
                 diffusion_form: str = 'SBDM',
                 last_step_size: float = 0.) -> Tuple[float, float]:
        """Time interval (t0, t1) of training or sampling (SiT
        ``check_interval``)."""
        eps = self.sample_eps if eval else self.train_eps
        t0, t1 = 0., 1.
        end = 1 - eps if (not sde or last_step_size == 0) else \
            1 - last_step_size
        if self.path_type == 'VP':
            t1 = end
        elif self.prediction != 'velocity' or sde:
            if (diffusion_form == 'SBDM'
                    and sde) or self.prediction != 'velocity':
                t0 = eps
            t1 = end
        return t0, t1

    # ----------------------------------------------------------- training
    def training_losses(self,
                        model: ModelFn,
                        x1: Tensor,
                        t: Optional[Tensor] = None,
                        x0: Optional[Tensor] = None,
                        model_kwargs: Optional[dict] = None
                        ) -> Dict[str, Tensor]:
        """Per-sample loss of the prediction (see the module docstring).

        Args:
            model (callable): ``model(x_t, t, **model_kwargs)``.
            x1 (Tensor): Data (N, C, H, W).
            t (Tensor, optional): Times (N, ); defaults to uniform on the
                training interval.
            x0 (Tensor, optional): Noise; defaults to N(0, I).
            model_kwargs (dict, optional): Extra network arguments.

        Returns:
            dict[str, Tensor]: ``loss`` (N, ) and ``pred``.
        """
        if x0 is None:
            x0 = torch.randn_like(x1)
        if t is None:
            t0, t1 = self.interval(eval=False)
            t = torch.rand(x1.shape[0], device=x1.device) * (t1 - t0) + t0
        t = t.to(x1)
        xt, ut = self.path.plan(t, x0, x1)
        pred = model(xt, t, **(model_kwargs or {}))
        if pred.shape != xt.shape:
            raise ValueError(f'the network output {tuple(pred.shape)} must '
                             f'match the input {tuple(xt.shape)}')
        if self.prediction == 'velocity':
            return dict(loss=mean_flat((pred - ut)**2), pred=pred)
        _, var = self.path.drift_and_var(xt, t)
        s = self.path.sigma(_expand(t, xt))[0]
        weight = 1.
        if self.loss_weight == 'velocity':
            weight = (var / s)**2
        elif self.loss_weight == 'likelihood':
            weight = var / s**2
        if self.prediction == 'noise':
            loss = mean_flat(weight * (pred - x0)**2)
        else:
            loss = mean_flat(weight * (pred * s + x0)**2)
        return dict(loss=loss, pred=pred)

    # ----------------------------------------------------------- sampling
    def velocity_and_score(self, out: Tensor, x: Tensor, t: Tensor):
        """Probability-flow velocity and score from a network output."""
        if self.prediction == 'velocity':
            return out, self.path.score_from_velocity(out, x, t)
        if self.prediction == 'noise':
            score = out / -self.path.sigma(_expand(t, x))[0]
        else:
            score = out
        return self.path.velocity_from_score(score, x, t), score

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
                   generator: Generator = None,
                   progress: bool = False) -> Tensor:
        """Integrate the reverse SDE from noise (t = 0) towards data (t = 1).

        ``num_steps`` time points are spaced on the interval; the solver
        takes ``num_steps - 1`` stochastic steps, then the deterministic last
        step (so the official setting evaluates the network 250 times with
        Euler-Maruyama).

        Args:
            model (callable): ``model(x, t, **model_kwargs)``.
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
            generator (torch.Generator | list, optional): RNG of the
                Brownian increments, or one per sample (see
                :func:`~visionllama_mm.generation.diffusion.randn`).
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
        t0, t1 = self.interval(
            sde=True,
            diffusion_form=diffusion_form,
            last_step_size=last_step_size)
        ts = torch.linspace(t0, t1, num_steps)
        dt = (ts[1] - ts[0]).item()

        def diffusion(x, t):
            return self.path.diffusion(x, t, diffusion_form, diffusion_norm)

        def flow(x, t):  # probability-flow velocity and score
            return self.velocity_and_score(model(x, t, **kwargs), x, t)

        def sde_drift(x, t):
            v, s = flow(x, t)
            return v + diffusion(x, t) * s

        x = x_init
        steps = ts[:-1].tolist()
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps)
        for ti in steps:
            t = torch.full((x.shape[0], ), ti, device=x.device, dtype=x.dtype)
            dw = randn(x.shape, generator, x.device, x.dtype) * math.sqrt(dt)
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
            x = x + flow(x, t)[0] * last_step_size
        elif last_step == 'Tweedie':
            a = self.path.alpha(_expand(t, x))[0]
            s = self.path.sigma(_expand(t, x))[0]
            x = x / a + s**2 / a * flow(x, t)[1]
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
        """Solve the probability-flow ODE ``dx/dt = v`` from noise to data.

        Uses ``torchdiffeq.odeint`` on ``num_steps`` points of the interval.
        Adaptive methods (``dopri5``, official) only report the solution
        there; fixed-grid ones (``euler``, ``heun2``, ``rk4``; SiT's
        ``'Euler'`` / ``'Heun'`` map to the first two) take one step per
        interval.

        Args:
            model (callable): ``model(x, t, **model_kwargs)``.
            x_init (Tensor): Initial noise.
            num_steps (int): Time points. Defaults to 250.
            method (str): torchdiffeq method. Defaults to ``'dopri5'``.
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
        method = ODE_ALIASES.get(method, method)
        kwargs = model_kwargs or {}
        t0, t1 = self.interval(sde=False)
        t = torch.linspace(t0, t1, max(num_steps, 2)).to(x_init)

        def fn(ti, x):
            tt = torch.full((x.shape[0], ),
                            float(ti),
                            device=x.device,
                            dtype=x.dtype)
            return self.velocity_and_score(model(x, tt, **kwargs), x, tt)[0]

        return odeint(fn, x_init, t, method=method, atol=atol, rtol=rtol)[-1]

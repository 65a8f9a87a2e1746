"""DiT's Gaussian diffusion: learned-variance training and respaced sampling.

Pure-torch re-implementation of the objective and sampler that DiT (and so
DiT-LLaMA, docs/generation.md#training-and-sampling) inherits from ADM /
improved DDPM (Nichol & Dhariwal, arXiv 2102.09672):

* a 1000-step linear beta schedule (``1e-4 .. 0.02``, rescaled by
  ``1000 / steps``), all tables computed in float64;
* an epsilon-predicting model whose extra output channels ``v`` in [-1, 1]
  interpolate the log-variance between the posterior variance and beta
  (``'learned_range'``); DiT's ``create_diffusion(predict_xstart=True)``
  (ADM's ``START_X``) makes the model predict x_0 instead;
* the hybrid loss ``L = MSE(eps) + L_vb`` (``MSE(x_0)`` when predicting
  x_0), where the variational bound term (in bits per dimension) only
  trains the variance (the mean is detached);
* DDPM ancestral sampling over a respaced subset of the timesteps (250 of
  1000 for the FID numbers), with the betas of the subset recomputed from the
  cumulative products and the network fed the *original* timestep indices;
* DDIM (Song et al., arXiv 2010.02502) on the same respaced process:
  ``x_{t-1} = sqrt(a') x0 + sqrt(1 - a' - s^2) eps + s z`` with
  ``s = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')`` (a, a' the
  cumulative products at t and t - 1), deterministic for ``eta = 0``; with
  ``eta = 1`` it is DDPM with the posterior ('fixed_small') variance.

mmagic's ``EditDDPMScheduler`` covers plain DDPM/DDIM steps but neither the
respacing nor the hybrid loss, so they are written here.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from visionllama_mm.utils import check_choice

__all__ = [
    'randn', 'linear_beta_schedule', 'space_timesteps', 'normal_kl',
    'discretized_gaussian_log_likelihood', 'mean_flat', 'GaussianDiffusion',
    'create_diffusion'
]

VAR_TYPES = ('learned_range', 'fixed_small', 'fixed_large')

ModelFn = Callable[..., Tensor]
Generator = Union[torch.Generator, Sequence[torch.Generator], None]


def randn(shape: Sequence[int],
          generator: Generator = None,
          device=None,
          dtype: Optional[torch.dtype] = None) -> Tensor:
    """Standard normal noise from one generator or from one per sample.

    With a list of generators, row i of the first dimension is drawn from
    generator i (on that generator's device), so a sample's noise does not
    depend on which batch, process or batch size it was drawn in. A first
    dimension that is k times the number of generators (the duplicated rows
    of classifier-free guidance) repeats the draws k times.

    Args:
        shape (Sequence[int]): Output shape (N, ...).
        generator (torch.Generator | Sequence[torch.Generator], optional):
            One RNG, or one per sample. Defaults to None (global RNG).
        device (torch.device, optional): Output device.
        dtype (torch.dtype, optional): Output dtype.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(
            *shape, generator=generator, device=device, dtype=dtype)
    n = len(generator)
    if n == 0 or shape[0] % n:
        raise ValueError(f'the batch ({shape[0]}) must be a multiple of the '
                         f'number of generators ({n})')
    rows = [
        torch.randn(*shape[1:], generator=g, device=g.device, dtype=dtype)
        for g in generator
    ]
    out = torch.stack(rows).to(device)
    return out.repeat(shape[0] // n, *([1] * (len(shape) - 1)))


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all non-batch dimensions."""
    return x.mean(dim=list(range(1, x.dim())))


def linear_beta_schedule(num_steps: int = 1000) -> Tensor:
    """DDPM linear betas, ``linspace(1e-4, 0.02) * 1000 / num_steps``."""
    scale = 1000. / num_steps
    return torch.linspace(
        scale * 1e-4,
        scale * 0.02,
        num_steps,
        dtype=torch.float64,
        device='cpu')


def space_timesteps(num_timesteps: int,
                    section_counts: Union[str, int,
                                          Sequence[int]]) -> List[int]:
    """Timesteps kept when respacing a diffusion process (ADM ``respace``).

    The process is split into ``len(section_counts)`` equal sections and the
    i-th section is strided to ``section_counts[i]`` evenly spaced (rounded)
    steps. ``'ddimN'`` uses DDIM's integer stride instead.

    Args:
        num_timesteps (int): Steps of the original process.
        section_counts (str | int | Sequence[int]): e.g. ``'250'``, ``250``,
            ``'10,15,20'`` or ``'ddim50'``.

    Returns:
        list[int]: Sorted original indices to keep.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith('ddim'):
            desired = int(section_counts[len('ddim'):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f'cannot create exactly {desired} steps with an '
                             f'integer stride')
        section_counts = [int(x) for x in section_counts.split(',')]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f'cannot divide a section of {size} steps into '
                             f'{count}')
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor,
              logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1. + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) +
                  (mean1 - mean2)**2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1. + torch.tanh(
        math.sqrt(2. / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor,
                                        log_scales: Tensor) -> Tensor:
    """Log-likelihood (nats) of data in [-1, 1] quantised to 256 bins.

    Args:
        x (Tensor): Targets, assumed to be uint8 values rescaled to [-1, 1].
        means (Tensor): Gaussian means.
        log_scales (Tensor): Gaussian log standard deviations.
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1. / 255))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1. / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1. - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


class GaussianDiffusion:
    """DDPM utilities for training and sampling (DiT / ADM numerics).

    The process runs over ``len(betas)`` steps; ``timestep_map[i]`` is the
    timestep of the *original* process that step i corresponds to (the
    network always sees original timesteps). Build it with
    :func:`create_diffusion`.

    Args:
        betas (Tensor): 1-D betas of the (possibly respaced) process.
        timestep_map (Sequence[int], optional): Original timestep of each
            step. Defaults to ``range(len(betas))``.
        var_type (str): Output variance:

            - ``'learned_range'`` - the model outputs 2C channels, the last C
              interpolate the log-variance (DiT, ``learn_sigma=True``);
            - ``'fixed_large'`` - beta_t (DiT with ``learn_sigma=False``);
            - ``'fixed_small'`` - the posterior variance.

            Defaults to ``'learned_range'``.
        predict_xstart (bool): The model's first C channels predict x_0
            (ADM ``ModelMeanType.START_X``) instead of the noise (DiT's
            default, ``EPSILON``). Defaults to False.
    """

    def __init__(self,
                 betas: Tensor,
                 timestep_map: Optional[Sequence[int]] = None,
                 var_type: str = 'learned_range',
                 predict_xstart: bool = False) -> None:
        check_choice('var_type', var_type, VAR_TYPES)
        # CPU tables (moved to the input's device on use): real numbers even
        # when the model is built under torch.device('meta')
        betas = torch.as_tensor(betas, dtype=torch.float64, device='cpu')
        if betas.dim() != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError('betas must be a 1-D tensor in (0, 1]')
        self.var_type = var_type
        self.predict_xstart = predict_xstart
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = torch.as_tensor(
            list(range(self.num_timesteps))
            if timestep_map is None else list(timestep_map),
            device='cpu')

        alphas = 1. - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat(
            [betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1. - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1. / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1. / self.alphas_cumprod -
                                            1).sqrt()
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = (
            betas * (1. - self.alphas_cumprod_prev) /
            (1. - self.alphas_cumprod))
        # the posterior variance is 0 at t = 0: clip its log with step 1
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([
                self.posterior_variance[1:2], self.posterior_variance[1:]
            ])) if self.num_timesteps > 1 else betas.new_zeros(0)
        self.posterior_mean_coef1 = (
            betas * self.alphas_cumprod_prev.sqrt() /
            (1. - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1. - self.alphas_cumprod_prev) *
                                     alphas.sqrt() /
                                     (1. - self.alphas_cumprod))
        self.log_betas = betas.log()

    # ------------------------------------------------------------------ utils
    @staticmethod
    def _extract(arr: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """arr[t] as float32 on x's device, broadcastable to x."""
        out = arr.to(t.device)[t].float()
        return out.view(-1, *([1] * (x.dim() - 1))).to(x.device)

    def _call_model(self, model: ModelFn, x: Tensor, t: Tensor,
                    **model_kwargs) -> Tensor:
        """Run the network with the original-process timesteps of ``t``."""
        ts = self.timestep_map.to(t.device)[t].to(t.dtype)
        return model(x, ts, **model_kwargs)

    # ---------------------------------------------------- forward process
    def q_sample(self,
                 x_start: Tensor,
                 t: Tensor,
                 noise: Optional[Tensor] = None) -> Tensor:
        """Sample x_t ~ q(x_t | x_0)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start +
                self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) *
                noise)

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor,
                                  t: Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1}|x_t, x_0)."""
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t) * x_start +
            self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        var = self._extract(self.posterior_variance, t, x_t)
        log_var = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, var, log_var

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor,
                                eps: Tensor) -> Tensor:
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
                self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor,
                                pred_xstart: Tensor) -> Tensor:
        return ((self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
                 pred_xstart) /
                self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    # ---------------------------------------------------- reverse process
    def p_mean_variance_from_output(self,
                                    model_output: Tensor,
                                    x: Tensor,
                                    t: Tensor,
                                    clip_denoised: bool = False
                                    ) -> Dict[str, Tensor]:
        """p(x_{t-1} | x_t) from a network output (eps or x_0 [, v])."""
        C = x.shape[1]
        if self.var_type == 'learned_range':
            if model_output.shape[1] != 2 * C:
                raise ValueError(
                    f"var_type='learned_range' needs {2 * C} output channels "
                    f'(eps and variance), got {model_output.shape[1]}')
            pred, var_values = model_output.split(C, dim=1)
            min_log = self._extract(self.posterior_log_variance_clipped, t, x)
            max_log = self._extract(self.log_betas, t, x)
            frac = (var_values + 1) / 2  # [-1, 1] -> [min, max]
            log_var = frac * max_log + (1 - frac) * min_log
        else:
            pred = model_output[:, :C]
            if self.var_type == 'fixed_large':
                # beta_t, with the posterior variance at the first step for a
                # better decoder likelihood (ADM)
                table = torch.cat(
                    [self.posterior_variance[1:2], self.betas[1:]]).log()
            else:
                table = self.posterior_log_variance_clipped
            log_var = self._extract(table, t, x)
        if self.predict_xstart:
            pred_xstart = pred
            eps = self.predict_eps_from_xstart(x, t, pred)
        else:
            pred_xstart = self.predict_xstart_from_eps(x, t, pred)
            eps = pred
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return dict(
            mean=mean, log_variance=log_var, pred_xstart=pred_xstart, eps=eps)

    def p_mean_variance(self,
                        model: ModelFn,
                        x: Tensor,
                        t: Tensor,
                        clip_denoised: bool = False,
                        model_kwargs: Optional[dict] = None
                        ) -> Dict[str, Tensor]:
        """Apply the network and return p(x_{t-1} | x_t) statistics."""
        out = self._call_model(model, x, t, **(model_kwargs or {}))
        return self.p_mean_variance_from_output(out, x, t, clip_denoised)

    def p_sample(self,
                 model: ModelFn,
                 x: Tensor,
                 t: Tensor,
                 clip_denoised: bool = False,
                 model_kwargs: Optional[dict] = None,
                 generator: Generator = None) -> Dict[str, Tensor]:
        """One ancestral step x_t -> x_{t-1} (no noise at t = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        noise = randn(x.shape, generator, x.device, x.dtype)
        nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
        sample = out['mean'] + nonzero * torch.exp(
            0.5 * out['log_variance']) * noise
        return dict(sample=sample, pred_xstart=out['pred_xstart'])

    def ddim_sample(self,
                    model: ModelFn,
                    x: Tensor,
                    t: Tensor,
                    clip_denoised: bool = False,
                    model_kwargs: Optional[dict] = None,
                    generator: Generator = None,
                    eta: float = 0.) -> Dict[str, Tensor]:
        """One DDIM step x_t -> x_{t-1} (see the module docstring)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        # eps consistent with the (possibly clipped) x_0, as ADM / DiT
        eps = self.predict_eps_from_xstart(x, t, out['pred_xstart'])
        a = self._extract(self.alphas_cumprod, t, x)
        a_prev = self._extract(self.alphas_cumprod_prev, t, x)
        sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
        mean = out['pred_xstart'] * a_prev.sqrt() + (1 - a_prev -
                                                     sigma**2).sqrt() * eps
        if eta > 0:
            noise = randn(x.shape, generator, x.device, x.dtype)
            nonzero = (t != 0).float().view(-1, *([1] * (x.dim() - 1)))
            mean = mean + nonzero * sigma * noise
        return dict(sample=mean, pred_xstart=out['pred_xstart'])

    @torch.no_grad()
    def p_sample_loop(self,
                      model: ModelFn,
                      shape: Sequence[int],
                      noise: Optional[Tensor] = None,
                      clip_denoised: bool = False,
                      model_kwargs: Optional[dict] = None,
                      device: Optional[torch.device] = None,
                      generator: Generator = None,
                      progress: bool = False,
                      sampler: str = 'ddpm',
                      eta: float = 0.) -> Tensor:
        """Generate samples by running every (respaced) step from noise.

        Args:
            model (callable): ``model(x, t, **model_kwargs)``.
            shape (Sequence[int]): Output shape (N, C, H, W).
            noise (Tensor, optional): Initial x_T. Defaults to N(0, I).
            clip_denoised (bool): Clip the x_0 prediction to [-1, 1] (DiT's
                latent sampling does not). Defaults to False.
            model_kwargs (dict, optional): Extra network arguments (``y``,
                ``cfg_scale``).
            device (torch.device, optional): Device of the samples.
            generator (torch.Generator | list, optional): RNG for all the
                noise, or one per sample (see :func:`randn`).
            progress (bool): Show a tqdm bar. Defaults to False.
            sampler (str): ``'ddpm'`` (ancestral, official) or ``'ddim'``.
                Defaults to ``'ddpm'``.
            eta (float): DDIM noise scale (0: deterministic). Defaults to 0.

        Returns:
            Tensor: x_0 samples of ``shape``.
        """
        check_choice('sampler', sampler, ('ddpm', 'ddim'))
        if eta < 0:
            raise ValueError(f'eta must be >= 0, got {eta}')
        if device is None:
            device = noise.device if noise is not None else 'cpu'
        x = noise if noise is not None else randn(shape, generator, device)
        indices = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm
            indices = tqdm(indices)
        for i in indices:
            t = torch.full((x.shape[0], ), i, device=device, dtype=torch.long)
            if sampler == 'ddpm':
                x = self.p_sample(model, x, t, clip_denoised, model_kwargs,
                                  generator)['sample']
            else:
                x = self.ddim_sample(model, x, t, clip_denoised, model_kwargs,
                                     generator, eta)['sample']
        return x

    # ----------------------------------------------------------- training
    def vb_terms_bpd(self, model_output: Tensor, x_start: Tensor, x_t: Tensor,
                     t: Tensor) -> Tensor:
        """Per-sample variational bound term in bits per dimension.

        KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the
        discretised decoder NLL at t = 0.
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(
            x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t)
        kl = normal_kl(true_mean, true_log_var, out['mean'],
                       out['log_variance'])
        kl = mean_flat(kl) / math.log(2.)
        nll = -discretized_gaussian_log_likelihood(x_start, out['mean'],
                                                   0.5 * out['log_variance'])
        nll = mean_flat(nll) / math.log(2.)
        return torch.where(t == 0, nll, kl)

    def training_losses(self,
                        model: ModelFn,
                        x_start: Tensor,
                        t: Optional[Tensor] = None,
                        noise: Optional[Tensor] = None,
                        model_kwargs: Optional[dict] = None
                        ) -> Dict[str, Tensor]:
        """Per-sample hybrid loss ``mse + vb`` (DiT's ``LossType.MSE``).

        ``mse`` regresses the noise, or x_0 with ``predict_xstart``.

        Args:
            model (callable): ``model(x_t, t, **model_kwargs)``.
            x_start (Tensor): Clean data x_0 (N, C, H, W).
            t (Tensor, optional): Steps (N, ); defaults to uniform.
            noise (Tensor, optional): Noise; defaults to N(0, I).
            model_kwargs (dict, optional): Extra network arguments.

        Returns:
            dict[str, Tensor]: ``loss``, ``mse`` and (learned variance only)
            ``vb``, each of shape (N, ).
        """
        if t is None:
            t = torch.randint(
                0,
                self.num_timesteps, (x_start.shape[0], ),
                device=x_start.device)
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        model_output = self._call_model(model, x_t, t, **(model_kwargs or {}))
        C = x_start.shape[1]
        terms = {}
        if self.var_type == 'learned_range':
            pred, var_values = model_output.split(C, dim=1)
            # the bound only trains the variance: detach the mean
            frozen = torch.cat([pred.detach(), var_values], dim=1)
            terms['vb'] = self.vb_terms_bpd(frozen, x_start, x_t, t)
        else:
            pred = model_output[:, :C]
        target = x_start if self.predict_xstart else noise
        terms['mse'] = mean_flat((target - pred)**2)
        terms['loss'] = terms['mse'] + terms.get('vb', 0.)
        return terms


def create_diffusion(timestep_respacing: Union[str, int, Sequence[int],
                                               None] = None,
                     noise_schedule: str = 'linear',
                     learn_sigma: bool = True,
                     diffusion_steps: int = 1000,
                     predict_xstart: bool = False) -> GaussianDiffusion:
    """DiT's ``create_diffusion``: a (respaced) linear-schedule process.

    Args:
        timestep_respacing (str | int | Sequence[int], optional): Steps to
            keep (see :func:`space_timesteps`); ``None`` or ``''`` keeps all
            (training). DiT samples with ``'250'``.
        noise_schedule (str): Only ``'linear'``. Defaults to ``'linear'``.
        learn_sigma (bool): Learned-range variance (else fixed large).
            Defaults to True.
        diffusion_steps (int): Steps of the base process. Defaults to 1000.
        predict_xstart (bool): The model predicts x_0 instead of the noise
            (DiT's option of the same name). Defaults to False (official).
    """
    check_choice('noise_schedule', noise_schedule, ['linear'])
    base = GaussianDiffusion(linear_beta_schedule(diffusion_steps))
    if timestep_respacing in (None, ''):
        timestep_respacing = [diffusion_steps]
    keep = space_timesteps(diffusion_steps, timestep_respacing)
    # betas of the respaced chain from the kept cumulative products
    ac = base.alphas_cumprod[keep]
    prev = torch.cat([ac.new_ones(1), ac[:-1]])
    return GaussianDiffusion(
        1. - ac / prev,
        timestep_map=keep,
        var_type='learned_range' if learn_sigma else 'fixed_large',
        predict_xstart=predict_xstart)

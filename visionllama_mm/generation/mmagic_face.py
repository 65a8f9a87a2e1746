"""OpenMMLab face of DiT-LLaMA and SiT-LLaMA (mmengine models for mmagic).

Registered models ``visionllama_mm.DiTLLaMA`` and ``visionllama_mm.SiTLLaMA``
wrap the networks of :mod:`.models` with their objective
(:mod:`.diffusion` / :mod:`.transport`) so that mmengine's ``Runner`` (and
``tools/train.py``) trains them, and ``predict`` / :meth:`sample` generate
class-conditional images.

* Data: mmagic datasets and ``mmagic.PackInputs`` give image tensors and
  ``DataSample`` objects with ``gt_label``; ``mmagic.DataPreprocessor``
  normalises the images to [-1, 1]. Plain dicts with a ``gt_label`` work
  too.
* Latent space: with ``vae=dict(path=...)`` images are encoded by the SD VAE
  (``diffusers.AutoencoderKL.from_pretrained(path)``, a local folder; nothing
  is downloaded) and scaled by 0.18215, as the official training. The VAE is
  frozen and kept out of the module tree (not in checkpoints, not in EMA).
  With ``cached_latents=True`` the inputs are the VAE posterior moments
  extracted once (fast-DiT's idea; here the moments, not one latent sample,
  are stored, so every epoch still draws a new latent).
* EMA: configs use mmengine's ``EMAHook`` (``momentum = 1 - decay``); the
  checkpoints it writes hold the EMA weights in ``state_dict``.

mmagic itself is only imported when a ``DataSample`` is built for outputs.
"""
import copy
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch import Tensor

from visionllama_mm.registry import MODELS
from visionllama_mm.utils import check_choice
from .diffusion import Generator, create_diffusion, randn
from .models import DiTLLaMA, SiTLLaMA, build_generator
from .transport import Transport

__all__ = ['DiTLLaMAModel', 'SiTLLaMAModel', 'FrozenVAE']

SD_VAE_SCALE = 0.18215


class FrozenVAE:
    """A frozen ``diffusers.AutoencoderKL`` loaded from a local folder.

    Deliberately not an ``nn.Module`` attribute of the model: its weights
    stay out of the state dict, the optimizer and the EMA copy.

    Args:
        path (str): Folder of ``AutoencoderKL.save_pretrained`` (e.g. a local
            copy of ``stabilityai/sd-vae-ft-ema``).
        scale_factor (float): Latent scaling. Defaults to 0.18215.
        sample_posterior (bool): Encode with a posterior sample (official)
            instead of its mean. Defaults to True.
    """

    def __init__(self,
                 path: str,
                 scale_factor: float = SD_VAE_SCALE,
                 sample_posterior: bool = True) -> None:
        self.path = path
        self.scale_factor = scale_factor
        self.sample_posterior = sample_posterior
        self._vae = None

    def module(self, device: torch.device) -> nn.Module:
        """The VAE on ``device``, loaded on first use.

        Loading leaves the global RNG as it was (``from_pretrained``
        initialises the modules randomly before it loads the weights), so
        training draws the same noise whether the VAE was loaded or not.
        """
        if self._vae is None:
            from diffusers.models import AutoencoderKL
            with torch.random.fork_rng(devices=[]):
                self._vae = AutoencoderKL.from_pretrained(
                    self.path,
                    local_files_only=True).eval().requires_grad_(False)
        return self._vae.to(device)

    @torch.no_grad()
    def moments(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> the posterior's mean and log-variance
        concatenated on channels (diffusers'
        ``DiagonalGaussianDistribution.parameters``, (N, 2C, h, w))."""
        return self.module(x.device).encode(x).latent_dist.parameters

    @torch.no_grad()
    def latents_from_moments(self, moments: Tensor) -> Tensor:
        """Posterior moments -> scaled latents (a sample, or the mean).

        Needs no VAE weights: training from cached moments
        (``cached_latents=True``) never loads the VAE. The sample uses
        diffusers' own ``DiagonalGaussianDistribution`` and the global RNG,
        as encoding on the fly does.
        """
        from diffusers.models.autoencoders.vae import \
            DiagonalGaussianDistribution
        dist = DiagonalGaussianDistribution(moments)
        z = dist.sample() if self.sample_posterior else dist.mean
        # contiguous: the encoder's output is strided like channels-last,
        # and the objectives draw their noise with randn_like, whose values
        # follow the memory layout
        return (z * self.scale_factor).contiguous()

    def encode(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] -> scaled latents."""
        return self.latents_from_moments(self.moments(x))

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents -> images in about [-1, 1]."""
        return self.module(z.device).decode(z / self.scale_factor).sample


class _GenerativeModel(BaseModel):
    """Shared face: network building, latent codec, labels, predict.

    Args:
        arch (str | dict): A name of the family's model table or a dict of
            ``net_class`` arguments.
        net_cfg (dict, optional): Network overrides (``input_size``,
            ``num_classes``, ``cfg_channels``, ``grad_checkpointing``...).
        vae (dict, optional): :class:`FrozenVAE` arguments for latent
            diffusion; None trains in pixel space. Defaults to None.
        sample_cfg (dict, optional): Defaults of :meth:`sample` used by
            ``predict`` (``num_steps``, ``cfg_scale``).
        data_preprocessor (dict, optional): Defaults to mmengine's
            ``ImgDataPreprocessor`` mapping [0, 255] to [-1, 1].
        init_cfg (dict, optional): mmengine init config.
        cached_latents (bool): The inputs are VAE posterior moments
            pre-extracted by ``tools/dataset_converters/extract_latents.py``
            (dataset ``visionllama_mm.CachedLatents``, no normalisation);
            the latents are sampled from them as on-the-fly encoding would,
            and the VAE is loaded only to decode samples. Defaults to False.
    """

    net_class = DiTLLaMA
    families = ('DiTLLaMA', 'DiT-LLaMA')

    def __init__(self,
                 arch: Union[str, dict] = 'DiTLLaMA_XL_2',
                 net_cfg: Optional[dict] = None,
                 vae: Optional[dict] = None,
                 sample_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 cached_latents: bool = False) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(
                type='ImgDataPreprocessor', mean=[127.5], std=[127.5])
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        net_cfg = dict(net_cfg or {})
        if isinstance(arch, str):
            if not arch.startswith(self.families):
                raise ValueError(f'arch must name a {self.families[0]} '
                                 f'model, got {arch!r}')
            self.net = build_generator(arch, **net_cfg)
        elif isinstance(arch, dict):
            self.net = self.net_class(**{**arch, **net_cfg})
        else:
            raise ValueError(f'arch must be a model name or a dict of '
                             f'{self.net_class.__name__} arguments, got '
                             f'{arch!r}')
        self.vae = FrozenVAE(**vae) if vae else None
        if cached_latents and self.vae is None:
            raise ValueError('cached_latents=True needs the vae settings '
                             '(scale factor, and the VAE to decode samples)')
        self.cached_latents = cached_latents
        self.sample_cfg = dict(sample_cfg or {})

    # ------------------------------------------------------------ helpers
    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def encode(self, images: Tensor) -> Tensor:
        """Normalised images (or, with ``cached_latents``, their VAE
        posterior moments) -> the space the network works in."""
        if self.cached_latents:
            return self.vae.latents_from_moments(images)
        return self.vae.encode(images) if self.vae else images

    def decode(self, z: Tensor) -> Tensor:
        """Network space -> images in [-1, 1]."""
        return self.vae.decode(z) if self.vae else z

    def latent_shape(self, images: Optional[Tensor] = None) -> tuple:
        """(C, H, W) of the network input."""
        s = self.net.input_size
        return (self.net.in_channels, s, s)

    @staticmethod
    def labels_from(data_samples, device=None) -> Tensor:
        """Class labels of the batch as a (N, ) long tensor.

        Accepts the stacked ``DataSample`` that ``mmagic.DataPreprocessor``
        produces (``gt_label.label`` of shape (N, 1)), a list of mmagic /
        mmpretrain data samples, a list of dicts with ``gt_label``, or such
        dicts collated into one (``{'gt_label': [...]}``).
        """
        if data_samples is None:
            raise ValueError('data_samples with gt_label are required')
        if isinstance(data_samples, dict):  # collated dicts (CachedLatents)
            return torch.as_tensor(
                data_samples['gt_label']).reshape(-1).long().to(device)
        if not isinstance(data_samples, (list, tuple)):
            label = data_samples.gt_label
            label = getattr(label, 'label', label)
            return torch.as_tensor(label).reshape(-1).long().to(device)
        labels = []
        for ds in data_samples:
            label = ds['gt_label'] if isinstance(ds, dict) else ds.gt_label
            label = getattr(label, 'label', label)  # LabelData
            labels.append(torch.as_tensor(label).reshape(-1)[0])
        return torch.stack(labels).long().to(device)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[Sequence] = None,
                mode: str = 'tensor'):
        """mmengine entry: ``'loss'``, ``'predict'`` or ``'tensor'``."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            labels = self.labels_from(data_samples, inputs.device)
            t = torch.zeros(len(inputs), device=inputs.device)
            return self.net(self.encode(inputs), t, labels)
        raise ValueError(f"mode must be one of ['loss', 'predict', "
                         f"'tensor'], got {mode!r}")

    def loss(self, inputs: Tensor,
             data_samples: Sequence) -> Dict[str, Tensor]:
        raise NotImplementedError

    def sample(self,
               labels: Union[Sequence[int], Tensor],
               seed: Optional[int] = None,
               generator: Generator = None,
               **kwargs) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, inputs, data_samples: Sequence) -> List:
        """Generate one image per data sample for its ``gt_label``.

        Returns mmagic ``DataSample`` objects with ``fake_img`` (C, H, W)
        in [0, 255] and the ``gt_label``.
        """
        from mmagic.structures import DataSample
        device = next(self.net.parameters()).device
        labels = self.labels_from(data_samples, device)
        imgs = self.sample(labels, **self.sample_cfg)
        imgs = ((imgs + 1) * 127.5).clamp(0, 255)
        outs = []
        for img, label in zip(imgs, labels):
            ds = DataSample(fake_img=img.cpu())
            ds.set_gt_label(int(label))
            outs.append(ds)
        return outs

    def _sample_with(self,
                     solve: Callable,
                     labels: Union[Sequence[int], Tensor],
                     seed: Optional[int],
                     cfg_scale: float,
                     noise: Optional[Tensor],
                     decode: bool,
                     generator: Generator = None) -> Tensor:
        """Sampling plumbing shared by the DiT and SiT models.

        Seeds a generator (or takes ``generator``: one, or one per sample),
        draws (or takes) the initial noise, duplicates it for CFG, runs
        ``solve(model_fn, noise, generator)`` with the network in eval mode,
        keeps the conditional half and decodes it.
        """
        device = next(self.net.parameters()).device
        labels = torch.as_tensor(labels, device=device).long()
        if generator is not None and seed is not None:
            raise ValueError('give seed or generator, not both')
        g = generator
        if seed is not None:
            g = torch.Generator(device).manual_seed(seed)
        if isinstance(g, (list, tuple)) and len(g) != len(labels):
            raise ValueError(f'generator: one per sample ({len(labels)}) '
                             f'needed, got {len(g)}')
        fn, k = self._cfg_model_fn(labels, cfg_scale)
        if noise is None:
            noise = self._init_noise(len(labels), g, device)
        if k == 2:
            noise = torch.cat([noise, noise])
        was_training = self.net.training
        self.net.eval()
        try:
            z = solve(fn, noise, g)
        finally:
            self.net.train(was_training)
        z = z[:len(labels)]
        return self.decode(z) if decode else z

    def _cfg_model_fn(self, labels: Tensor, cfg_scale: float):
        """Network call and label batch with the official CFG batching."""
        if cfg_scale > 1.:
            null = torch.full_like(labels, self.num_classes)
            y = torch.cat([labels, null])

            def fn(x, t):
                return self.net.forward_with_cfg(x, t, y, cfg_scale)

            return fn, 2
        return (lambda x, t: self.net(x, t, labels)), 1

    def _init_noise(self, n: int, generator: Generator, device) -> Tensor:
        return randn((n, *self.latent_shape()), generator, device)


@MODELS.register_module(name='DiTLLaMA')
class DiTLLaMAModel(_GenerativeModel):
    """DiT-LLaMA with DiT's diffusion objective (mmengine model).

    Training minimises the hybrid loss (MSE on the noise + the variational
    bound for the learned variance) of the 1000-step linear-schedule
    diffusion; sampling runs DDPM over a respaced subset of the steps (250
    for the official FID), with classifier-free guidance when
    ``cfg_scale > 1``.

    Args:
        arch (str | dict): A name of ``DiTLLaMA_models`` (e.g.
            ``'DiTLLaMA_XL_2'``) or a dict of :class:`DiTLLaMA` arguments.
            Defaults to ``'DiTLLaMA_XL_2'``.
        net_cfg (dict, optional): Network overrides (``input_size``,
            ``num_classes``, ``cfg_channels``, ``grad_checkpointing``...).
        diffusion_steps (int): Steps of the training process. Defaults to
            1000.
        predict_xstart (bool): The network predicts the clean x_0 instead
            of the noise (DiT's ``create_diffusion(predict_xstart=True)``,
            ADM's ``START_X``); the loss is then the MSE on x_0 (+ the
            bound). Official DiT-LLaMA predicts the noise; the tiny
            pixel-space quick start predicts x_0 (see its config).
            Defaults to False.
        vae, sample_cfg, data_preprocessor, init_cfg, cached_latents: As in
            :class:`_GenerativeModel`.
    """

    net_class = DiTLLaMA
    families = ('DiTLLaMA', 'DiT-LLaMA')

    def __init__(self,
                 arch: Union[str, dict] = 'DiTLLaMA_XL_2',
                 net_cfg: Optional[dict] = None,
                 diffusion_steps: int = 1000,
                 predict_xstart: bool = False,
                 vae: Optional[dict] = None,
                 sample_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 cached_latents: bool = False) -> None:
        super().__init__(arch, net_cfg, vae, sample_cfg, data_preprocessor,
                         init_cfg, cached_latents)
        self.diffusion_steps = diffusion_steps
        self.diffusion = create_diffusion(
            '',
            learn_sigma=self.net.learn_sigma,
            diffusion_steps=diffusion_steps,
            predict_xstart=predict_xstart)

    def loss(self, inputs: Tensor,
             data_samples: Sequence) -> Dict[str, Tensor]:
        """Hybrid DiT loss; ``mse`` and ``vb`` are logged separately."""
        labels = self.labels_from(data_samples, inputs.device)
        x = self.encode(inputs)
        terms = self.diffusion.training_losses(
            self.net, x, model_kwargs=dict(y=labels))
        out = dict(loss=terms['loss'].mean(), mse=terms['mse'].mean())
        if 'vb' in terms:
            out['vb'] = terms['vb'].mean()
        return out

    @torch.no_grad()
    def sample(self,
               labels: Union[Sequence[int], Tensor],
               seed: Optional[int] = None,
               num_steps: int = 250,
               cfg_scale: float = 1.,
               noise: Optional[Tensor] = None,
               progress: bool = False,
               decode: bool = True,
               generator: Generator = None,
               sampler: str = 'ddpm',
               eta: float = 0.) -> Tensor:
        """Class-conditional DDPM / DDIM samples (images in [-1, 1] if
        decoded).

        Args:
            labels (Sequence[int] | Tensor): One class per sample.
            seed (int, optional): Seed of all the sampling noise; the same
                seed gives the same samples. Defaults to None (global RNG).
            num_steps (int | str): Respacing of the 1000 steps. Defaults to
                250 (official).
            cfg_scale (float): Guidance scale; > 1 enables CFG (official
                semantics, see :meth:`DiTLLaMA.forward_with_cfg`).
                Defaults to 1.
            noise (Tensor, optional): Initial noise (N, C, H, W).
            progress (bool): Show a bar over the steps. Defaults to False.
            decode (bool): Decode latents with the VAE. Defaults to True.
            generator (torch.Generator | list, optional): Instead of
                ``seed``: one RNG, or one per sample (then a sample does not
                depend on its batch; see
                :func:`~visionllama_mm.generation.diffusion.randn`).
            sampler (str): ``'ddpm'`` (official) or ``'ddim'``. DDIM is
                usually run with fewer steps, e.g. ``num_steps='ddim50'``.
                Defaults to ``'ddpm'``.
            eta (float): DDIM noise scale; 0 is deterministic. Defaults to 0.
        """
        diffusion = create_diffusion(
            str(num_steps),
            learn_sigma=self.net.learn_sigma,
            diffusion_steps=self.diffusion_steps,
            predict_xstart=self.diffusion.predict_xstart)

        def solve(fn, noise, g):
            return diffusion.p_sample_loop(
                fn,
                noise.shape,
                noise=noise,
                generator=g,
                progress=progress,
                sampler=sampler,
                eta=eta)

        return self._sample_with(solve, labels, seed, cfg_scale, noise, decode,
                                 generator)


@MODELS.register_module(name='SiTLLaMA')
class SiTLLaMAModel(_GenerativeModel):
    """SiT-LLaMA with SiT's linear velocity transport (mmengine model).

    Training regresses the velocity ``x_1 - x_0`` of the linear interpolant;
    sampling solves the reverse SDE with Euler-Maruyama (official: 250
    steps, diffusion form ``'sigma'``, last step ``'Mean'`` of size 0.04) or
    the probability-flow ODE with dopri5 (atol 1e-6, rtol 1e-3). SiT's
    other transports (GVP / VP paths, score / noise predictions) are
    options of ``transport``.

    Args:
        arch (str | dict): A name of ``SiTLLaMA_models`` or a dict of
            :class:`SiTLLaMA` arguments. Defaults to ``'SiTLLaMA_XL_2'``.
        net_cfg (dict, optional): Network overrides.
        transport (dict, optional): :class:`Transport` arguments
            (``path``, ``prediction``, ``loss_weight``, ``train_eps``,
            ``sample_eps``). Defaults to the linear velocity transport.
        vae, sample_cfg, data_preprocessor, init_cfg, cached_latents: As in
            :class:`_GenerativeModel` (``sample_cfg`` also takes ``mode``,
            ``'sde'`` or ``'ode'``).
    """

    net_class = SiTLLaMA
    families = ('SiTLLaMA', 'SiT-LLaMA')

    def __init__(self,
                 arch: Union[str, dict] = 'SiTLLaMA_XL_2',
                 net_cfg: Optional[dict] = None,
                 transport: Optional[dict] = None,
                 vae: Optional[dict] = None,
                 sample_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 cached_latents: bool = False) -> None:
        super().__init__(arch, net_cfg, vae, sample_cfg, data_preprocessor,
                         init_cfg, cached_latents)
        self.transport = Transport(**(transport or {}))

    def loss(self, inputs: Tensor,
             data_samples: Sequence) -> Dict[str, Tensor]:
        """The transport's loss (velocity matching on the linear path by
        default)."""
        labels = self.labels_from(data_samples, inputs.device)
        x1 = self.encode(inputs)
        terms = self.transport.training_losses(
            self.net, x1, model_kwargs=dict(y=labels))
        return dict(loss=terms['loss'].mean())

    @torch.no_grad()
    def sample(self,
               labels: Union[Sequence[int], Tensor],
               seed: Optional[int] = None,
               mode: str = 'sde',
               num_steps: int = 250,
               cfg_scale: float = 1.,
               noise: Optional[Tensor] = None,
               progress: bool = False,
               decode: bool = True,
               generator: Generator = None,
               **solver_kwargs) -> Tensor:
        """Class-conditional samples by the SDE or the ODE sampler.

        Args:
            labels (Sequence[int] | Tensor): One class per sample.
            seed (int, optional): Seed of the initial noise and the Brownian
                increments. Defaults to None (global RNG).
            mode (str): ``'sde'`` (Euler-Maruyama / Heun) or ``'ode'``
                (dopri5 / euler / heun2). Defaults to ``'sde'``.
            num_steps (int): SDE time points / ODE report points. Defaults
                to 250 (official).
            cfg_scale (float): Guidance scale; > 1 enables CFG. Defaults
                to 1.
            noise (Tensor, optional): Initial noise (N, C, H, W).
            progress (bool): Show a bar over the SDE steps.
            decode (bool): Decode latents with the VAE. Defaults to True.
            generator (torch.Generator | list, optional): Instead of
                ``seed``: one RNG, or one per sample.
            **solver_kwargs: Passed to :meth:`Transport.sample_sde` /
                :meth:`Transport.sample_ode` (``diffusion_form``,
                ``last_step``, ``atol``, ``method``, ...).
        """
        check_choice('mode', mode, ['sde', 'ode'])

        def solve(fn, noise, g):
            if mode == 'sde':
                return self.transport.sample_sde(
                    fn,
                    noise,
                    num_steps=num_steps,
                    generator=g,
                    progress=progress,
                    **solver_kwargs)
            return self.transport.sample_ode(
                fn, noise, num_steps=num_steps, **solver_kwargs)

        return self._sample_with(solve, labels, seed, cfg_scale, noise, decode,
                                 generator)


def build_model_from_cfg(cfg: dict) -> nn.Module:
    """Build a registered model from a config dict (deep-copied)."""
    return MODELS.build(copy.deepcopy(cfg))

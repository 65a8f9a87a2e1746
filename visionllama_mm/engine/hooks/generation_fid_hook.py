"""``GenerationFIDHook``: FID of a DiT-LLaMA / SiT-LLaMA model during training.

Every ``interval`` iterations the hook samples ``num_samples`` images with
the model (the EMA weights when an ``EMAHook`` runs), splits the samples
over the processes exactly as ``tools/sample.py`` does (sample i's label and
noise come from ``(seed, i)``, so the value does not depend on the number of
processes and differences between evaluations come from the weights only),
extracts their features with a local network, gathers them, and logs the
Frechet distance to stored reference statistics (``mu`` / ``sigma`` of an
``.npz``; ``tools/analysis_tools/fid.py --save-ref-stats`` writes them, with
the same extractor). The value goes to the log, to the visualizer backends
(key ``fid``, step = iteration) and to ``hook.history``.

A validation loop would need a dataset and a metric face that the
generative models do not have, so this is a hook, as mmagic's generation
evaluation is a loop of its own.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from visionllama_mm.registry import HOOKS

__all__ = ['GenerationFIDHook']


@HOOKS.register_module()
class GenerationFIDHook(Hook):
    """Sample, extract features and log FID every ``interval`` iterations.

    Args:
        ref_stats (str): ``.npz`` with ``mu`` and ``sigma`` of the reference
            features.
        extractor (str): TorchScript feature network (e.g. an InceptionV3),
            or ``'fid-helper'`` (see
            :class:`~visionllama_mm.generation.fid.TorchScriptFeatureExtractor`).
        num_samples (int): Images per evaluation. Defaults to 1000.
        interval (int): Iterations between evaluations. Defaults to 10000.
        sample_kwargs (dict, optional): Sampler settings (``num_steps``,
            ``cfg_scale``, ``mode``...) over the model's ``sample_cfg``.
            Defaults to None.
        batch_size (int): Samples per sampler call. Defaults to 50.
        seed (int): Seed of the samples. Defaults to 0.
        use_ema (bool): Sample with the EMA weights when an ``EMAHook``
            runs. Defaults to True.
        resize (tuple[int, int], optional): Extractor input size.
            Defaults to (299, 299).
        before_train (bool): Also evaluate the initial weights. Defaults
            to False.
    """

    priority = 'LOW'  # after the EMA update of the iteration

    def __init__(self,
                 ref_stats: str,
                 extractor: str,
                 num_samples: int = 1000,
                 interval: int = 10000,
                 sample_kwargs: Optional[dict] = None,
                 batch_size: int = 50,
                 seed: int = 0,
                 use_ema: bool = True,
                 resize: Optional[Sequence[int]] = (299, 299),
                 before_train: bool = False) -> None:
        for name, v in (('num_samples', num_samples), ('interval', interval),
                        ('batch_size', batch_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f'{name} must be an int >= 1, got {v!r}')
        if num_samples < 2:
            raise ValueError(f'num_samples must be >= 2, got {num_samples}')
        with np.load(ref_stats) as data:
            if 'mu' not in data or 'sigma' not in data:
                raise ValueError(f'ref_stats {ref_stats!r} must hold mu and '
                                 f'sigma, has {sorted(data.keys())}')
            self.ref = (data['mu'], data['sigma'])
        self.extractor_path = extractor
        self.resize = tuple(resize) if resize else None
        self.num_samples = num_samples
        self.interval = interval
        self.sample_kwargs = dict(sample_kwargs or {})
        self.batch_size = batch_size
        self.seed = seed
        self.use_ema = use_ema
        self.eval_before_train = before_train
        self.history: List[Tuple[int, float]] = []
        self._extractor = None

    # ------------------------------------------------------------ helpers
    def _generator_model(self, runner):
        """The model to sample with: the EMA copy when there is one."""
        if self.use_ema:
            for hook in runner.hooks:
                if type(hook).__name__ == 'EMAHook' and hasattr(
                        hook, 'ema_model'):
                    return hook.ema_model.module
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def compute_fid(self, model) -> float:
        """FID of ``model``'s samples; call it on every rank."""
        import torch

        from visionllama_mm.generation.fid import (TorchScriptFeatureExtractor,
                                                   extract_features,
                                                   feature_statistics,
                                                   frechet_distance)
        from visionllama_mm.generation.sampling import (sample_indices,
                                                        to_uint8_nhwc)
        device = next(model.parameters()).device
        if self._extractor is None:
            self._extractor = TorchScriptFeatureExtractor(
                self.extractor_path, resize=self.resize, device=device)
        kwargs = dict(getattr(model, 'sample_cfg', {}), **self.sample_kwargs)

        def sample_fn(labels, generators):
            with torch.no_grad():
                x = model.sample(
                    labels.to(device), generator=generators, **kwargs)
            return to_uint8_nhwc(x)

        rank, world = get_dist_info()
        images, _ = sample_indices(sample_fn,
                                   range(rank, self.num_samples,
                                         world), self.seed, model.num_classes,
                                   None, self.batch_size)
        feats = extract_features(self._extractor, images, self.batch_size)
        # rank r holds samples r, r + world, ...: restore the global order
        parts = all_gather_object(feats)
        order = np.concatenate(
            [np.arange(r, self.num_samples, world) for r in range(world)])
        gathered = np.empty((self.num_samples, feats.shape[1]), feats.dtype)
        gathered[order] = np.concatenate(parts)
        mu, sigma = feature_statistics(gathered)
        return frechet_distance(mu, sigma, *self.ref)

    def _evaluate(self, runner, step: int) -> float:
        fid = self.compute_fid(self._generator_model(runner))
        self.history.append((step, fid))
        runner.logger.info(f'Iter [{step}] FID ({self.num_samples} samples): '
                           f'{fid:.4f}')
        runner.visualizer.add_scalars({'fid': fid}, step=step)
        return fid

    # -------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        if self.eval_before_train:
            self._evaluate(runner, runner.iter)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Union[dict, tuple, list, None] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._evaluate(runner, runner.iter + 1)

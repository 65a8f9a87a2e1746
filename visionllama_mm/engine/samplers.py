"""``ResumableSampler``: a data order and augmentation randomness that a
resumed run replays exactly.

mmengine's ``DefaultSampler`` already makes the *order* of an epoch a
function of ``(seed, epoch)``. The random transforms (crops, flips, ...) are
not: they draw from the global ``random`` / ``numpy`` / ``torch`` generators
of whichever process runs the pipeline (a dataloader worker, seeded once
when it starts), so a run resumed after epoch ``e`` replays epoch 1's
augmentation stream in epoch ``e + 1``, and a run resumed in the middle of
an epoch cannot skip the batches already trained on.

This sampler fixes both:

* every index it yields carries a seed derived from ``(seed, epoch,
  index)``; the dataset's pipeline is wrapped so that it seeds ``random``,
  ``numpy.random`` and ``torch`` from that value before it transforms the
  sample. The augmentation of a sample therefore depends on the seed, the
  epoch and the sample only: not on the number of workers, the number of
  processes, whether workers are persistent, or where a run was resumed;
* :meth:`ResumableSampler.skip` drops the first samples of the next epoch
  (in the global order, before the split across processes), which
  :class:`~visionllama_mm.engine.hooks.ResumableCheckpointHook` uses to
  resume in the middle of an epoch.

The global order is split across processes the way ``DefaultSampler`` does
it (process ``r`` of ``W`` takes positions ``r, r + W, ...``), so global
batch ``k`` always holds the same samples when ``W * batch_size`` is the
same.
"""
import logging
from typing import Iterator, Optional

import numpy as np
from mmengine.dataset import DefaultSampler
from mmengine.logging import print_log

from visionllama_mm.registry import DATA_SAMPLERS

__all__ = ['ResumableSampler', 'SampleIndex', 'sample_seed', 'seed_all']


class SampleIndex(int):
    """A dataset index that carries the seed of the sample's randomness.

    It is an ``int`` (datasets index with it unchanged) and pickles with
    its seed, so it reaches dataloader workers intact.
    """

    def __new__(cls, index: int, seed: int) -> 'SampleIndex':
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):
        return SampleIndex, (int(self), self.seed)


def sample_seed(*keys: int) -> int:
    """A 64-bit seed mixed from integer keys (numpy's ``SeedSequence``, so
    nearby keys give unrelated streams)."""
    words = np.random.SeedSequence([int(k) % (1 << 64)
                                    for k in keys]).generate_state(
                                        2, dtype=np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def seed_all(seed: int) -> None:
    """Seed ``random``, ``numpy.random`` and ``torch`` (all devices) from one
    64-bit value."""
    import random

    import torch
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


class _SeededPipeline:
    """Wraps a dataset's pipeline: seeds the generators from the
    :class:`SampleIndex` in ``results['sample_idx']`` before transforming."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def __getattr__(self, name):
        # ``transforms`` and anything else a caller reads from the pipeline
        if name == 'pipeline':
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __call__(self, results):
        index = results.get('sample_idx') if isinstance(results,
                                                        dict) else None
        if isinstance(index, SampleIndex):
            seed_all(index.seed)
            results['sample_idx'] = int(index)
        return self.pipeline(results)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.pipeline!r})'


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """``DefaultSampler`` whose augmentation randomness is replayable and
    which can skip the start of an epoch.

    On construction it wraps ``dataset.pipeline`` (every mmengine
    ``BaseDataset`` has one and puts the index in ``sample_idx``) so that
    each sample's transforms are seeded from ``(seed, epoch, index)``. A
    dataset without a ``pipeline`` (e.g. a ``ConcatDataset``) keeps its
    order replayable but not its augmentation, which is logged.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Shuffle the order every epoch. Defaults to True.
        seed (int, optional): Seed of the order and the augmentation; the
            runner passes its own. Defaults to None (a random seed shared
            by all processes).
        round_up (bool): Repeat samples so that every process gets the same
            number. Defaults to True.
    """

    def __init__(self,
                 dataset,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True) -> None:
        super().__init__(
            dataset=dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        self._skip = 0
        pipeline = getattr(dataset, 'pipeline', None)
        if pipeline is None:
            print_log(
                f'ResumableSampler: {type(dataset).__name__} has no '
                '`pipeline`, so its random transforms are not seeded per '
                'sample and a resumed run will not replay them exactly.',
                logger='current',
                level=logging.WARNING)
        elif not isinstance(pipeline, _SeededPipeline):
            dataset.pipeline = _SeededPipeline(pipeline)

    def skip(self, num_samples: int) -> None:
        """Leave out the first ``num_samples`` positions of the global order
        in the next epoch only (resuming in the middle of an epoch)."""
        if num_samples < 0:
            raise ValueError(f'num_samples must be >= 0, got {num_samples}')
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            import torch
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        if self.round_up:
            indices = (
                indices *
                int(self.total_size / len(indices) + 1))[:self.total_size]
        start, self._skip = self._skip, 0
        # a per-(seed, epoch, sample) seed, independent of the process count
        base = sample_seed(self.seed, self.epoch)
        return iter(
            SampleIndex(i, sample_seed(base, i))
            for i in indices[start +
                             self.rank:self.total_size:self.world_size])

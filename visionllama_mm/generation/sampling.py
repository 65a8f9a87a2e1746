"""Distributed, resumable class-conditional sampling for FID.

The official ``sample_ddp.py`` scripts of DiT / SiT seed each process with
``global_seed * world_size + rank``, so the images depend on the number of
processes, and a crash loses the run. Here:

* sample i owns a generator seeded from ``(seed, i)`` only
  (:func:`sample_generator`); its class label (unless the caller fixes the
  labels) and every noise draw of the sampler (initial noise, DDPM / DDIM /
  SDE noise, via :func:`~visionllama_mm.generation.diffusion.randn`) come
  from it, so sample i is the same image whatever the number of processes,
  the batch size or the shard it lands in;
* the job is cut into shards of ``shard_size`` consecutive samples; each is
  written atomically (``shards_<job>/shard_000012.npz``, temporary file then
  ``os.replace``) and a restarted job samples only the missing ones, split
  evenly over the processes;
* rank 0 merges the shards into ``samples_<N>.npz`` holding ``arr_0``
  (uint8 N x H x W x 3) and ``labels``, the layout of the ADM evaluation
  suite (``evaluator.py``) that DiT and SiT use, which
  ``tools/analysis_tools/fid.py`` reads too;
* progress is counted over the whole job: rank 0 counts the shard files of
  all processes (a shared output folder) and prints the rate and the ETA.

The shard folder is named by a digest of everything that defines the
samples (``job.json`` inside lists it: checkpoint, sampler settings, seed,
count, shard size, labels), so a restart with the same settings resumes,
and other settings in the same output folder never mix with those shards.
"""
import hashlib
import json
import os
import os.path as osp
import time
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    'sample_generator', 'sample_labels', 'sample_indices', 'to_uint8_nhwc',
    'sample_shards', 'merge_shards', 'run_shards', 'check_job',
    'save_npz_atomic', 'init_distributed'
]

# images (N, H, W, 3) uint8 for labels (N, ) and one generator per sample
SampleFn = Callable[[Tensor, List[torch.Generator]], np.ndarray]


def sample_generator(seed: int, index: int) -> torch.Generator:
    """CPU generator of sample ``index`` of a job seeded with ``seed``.

    The seed is mixed by numpy's ``SeedSequence``, so neighbouring samples
    and seeds get unrelated streams.
    """
    if seed < 0 or index < 0:
        raise ValueError(f'seed and index must be >= 0, got {seed}, {index}')
    state = np.random.SeedSequence((seed, index)).generate_state(
        1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def sample_labels(generators: Sequence[torch.Generator],
                  indices: Sequence[int],
                  num_classes: int,
                  labels: Optional[Sequence[int]] = None) -> Tensor:
    """Labels of the samples ``indices``, drawn first from their generators.

    Each generator gives one uniform class draw (also when ``labels`` is
    given, so the noise that follows does not depend on it); ``labels``, if
    given, are cycled over the sample indices instead.
    """
    drawn = [
        int(torch.randint(0, num_classes, (1, ), generator=g))
        for g in generators
    ]
    if labels is None:
        return torch.tensor(drawn, dtype=torch.long)
    return torch.tensor([labels[i % len(labels)] for i in indices],
                        dtype=torch.long)


def to_uint8_nhwc(images: Tensor) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W), C in {1, 3} -> uint8 (N, H, W, 3)."""
    x = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255)
    x = x.to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def sample_indices(sample_fn: SampleFn,
                   indices: Sequence[int],
                   seed: int,
                   num_classes: int,
                   labels: Optional[Sequence[int]] = None,
                   batch_size: int = 32):
    """Sample the given indices of a job in batches.

    Args:
        sample_fn (callable): ``(labels, generators) -> uint8 images``.
        indices (Sequence[int]): Sample indices.
        seed (int): Job seed.
        num_classes (int): Classes of random labels.
        labels (Sequence[int], optional): Fixed labels, cycled.
        batch_size (int): Samples per call. Defaults to 32.

    Returns:
        tuple[np.ndarray, np.ndarray]: uint8 images (N, H, W, 3) and the
        int64 labels (N, ).
    """
    images, all_labels = [], []
    for s in range(0, len(indices), batch_size):
        idx = list(indices[s:s + batch_size])
        gens = [sample_generator(seed, i) for i in idx]
        lab = sample_labels(gens, idx, num_classes, labels)
        images.append(np.asarray(sample_fn(lab, gens)))
        all_labels.append(lab.numpy())
    return np.concatenate(images), np.concatenate(all_labels)


def _shard_path(shard_dir: str, k: int) -> str:
    return osp.join(shard_dir, f'shard_{k:06d}.npz')


def save_npz_atomic(path: str, **arrays) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def check_job(shard_dir: str, job: dict) -> None:
    """Record the job in ``job.json``, or check that it is the same job."""
    path = osp.join(shard_dir, 'job.json')
    job = json.loads(json.dumps(job))  # tuples -> lists, as stored
    if osp.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != job:
            diff = sorted(
                k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise ValueError(
                f'{shard_dir} holds shards of another job (differs in '
                f'{diff}); use another output folder or delete it')
        return
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(job, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def merge_shards(shard_dir: str, num_samples: int, shard_size: int,
                 out_path: str) -> str:
    """Concatenate the shards into one ADM-layout ``.npz`` (atomically)."""
    num_shards = -(-num_samples // shard_size)
    images, labels = [], []
    for k in range(num_shards):
        with np.load(_shard_path(shard_dir, k)) as data:
            images.append(data['arr_0'])
            labels.append(data['labels'])
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(images) != num_samples:
        raise RuntimeError(f'the shards in {shard_dir} hold {len(images)} '
                           f'samples, expected {num_samples}')
    save_npz_atomic(out_path, arr_0=images, labels=labels)
    return out_path


def run_shards(num_shards: int,
               is_done: Callable[[int], bool],
               work: Callable[[int], None],
               desc: str = 'shards',
               log: Callable[[str], None] = print) -> None:
    """Run the missing shards of a job, split evenly over the ranks.

    Every rank lists the missing shards before any rank writes one (a
    barrier), so all ranks agree on the split; ``work(k)`` must write shard
    k atomically. Rank 0 logs progress over the whole job (counting the
    done shards of all ranks with ``is_done``) with the rate and the ETA.
    Returns after a final barrier.
    """
    from mmengine.dist import barrier, get_dist_info
    rank, world = get_dist_info()
    pending = [k for k in range(num_shards) if not is_done(k)]
    barrier()
    done_at_start = num_shards - len(pending)
    if rank == 0:
        log(f'[{desc}] {num_shards} shards: {done_at_start} done, '
            f'{len(pending)} to go on {world} process(es)')
    start = time.time()
    for k in pending[rank::world]:
        work(k)
        if rank == 0:
            done = sum(map(is_done, range(num_shards)))
            elapsed = time.time() - start
            rate = (done - done_at_start) / max(elapsed, 1e-9)
            msg = f'[{desc}] {done}/{num_shards} shards ' \
                  f'({100. * done / num_shards:.1f}%), elapsed ' \
                  f'{_fmt_time(elapsed)}'
            if rate > 0:
                msg += f', ETA {_fmt_time((num_shards - done) / rate)}'
            log(msg)
    barrier()


def sample_shards(sample_fn: SampleFn,
                  num_samples: int,
                  out_dir: str,
                  num_classes: int,
                  seed: int = 0,
                  labels: Optional[Sequence[int]] = None,
                  shard_size: int = 256,
                  batch_size: int = 32,
                  job: Optional[dict] = None,
                  log: Callable[[str], None] = print) -> str:
    """Sample ``num_samples`` images in resumable shards on every process.

    Call it on every rank of an initialised process group (or without one).
    Shards already on disk are skipped; the missing ones are split evenly
    over the ranks. Returns the merged ``samples_<N>.npz`` path (written
    by rank 0, visible to all ranks when the call returns).

    Args:
        sample_fn (callable): ``(labels, generators) -> uint8 (N, H, W, 3)``.
        num_samples (int): Samples of the job.
        out_dir (str): Output folder (shared by all ranks).
        num_classes (int): Classes of the random labels.
        seed (int): Job seed. Defaults to 0.
        labels (Sequence[int], optional): Fixed labels, cycled.
        shard_size (int): Samples per shard file. Defaults to 256.
        batch_size (int): Samples per ``sample_fn`` call. Defaults to 32.
        job (dict, optional): What else defines the samples (checkpoint,
            sampler settings); stored in ``job.json`` and compared on
            restart.
        log (callable): Where rank 0 writes progress. Defaults to print.
    """
    from mmengine.dist import barrier, get_dist_info
    for name, v in (('num_samples', num_samples), ('shard_size', shard_size),
                    ('batch_size', batch_size)):
        if v < 1:
            raise ValueError(f'{name} must be >= 1, got {v}')
    rank, _ = get_dist_info()
    num_shards = -(-num_samples // shard_size)
    spec = dict(
        job or {},
        num_samples=num_samples,
        shard_size=shard_size,
        seed=seed,
        num_classes=num_classes,
        labels=None if labels is None else list(labels))
    digest = hashlib.sha1(
        json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    shard_dir = osp.join(out_dir, f'shards_{digest[:12]}')
    if rank == 0:
        os.makedirs(shard_dir, exist_ok=True)
        check_job(shard_dir, spec)
    barrier()
    if rank != 0:
        check_job(shard_dir, spec)

    def work(k):
        idx = range(k * shard_size, min((k + 1) * shard_size, num_samples))
        images, lab = sample_indices(sample_fn, idx, seed, num_classes, labels,
                                     batch_size)
        save_npz_atomic(
            _shard_path(shard_dir, k),
            arr_0=images,
            labels=lab,
            indices=np.asarray(idx, dtype=np.int64))

    run_shards(num_shards, lambda k: osp.isfile(_shard_path(shard_dir, k)),
               work, f'sample {num_samples} images', log)
    out_path = osp.join(out_dir, f'samples_{num_samples}.npz')
    if rank == 0:
        merge_shards(shard_dir, num_samples, shard_size, out_path)
        log(f'[sample] wrote {out_path}')
    barrier()
    return out_path


def init_distributed(launcher: str) -> Optional[torch.device]:
    """Initialise the process group of a sampling / extraction tool.

    With CUDA, mmengine's ``init_dist`` (NCCL, one device per local rank);
    without, a gloo group for ``'pytorch'`` (torchrun). Returns this
    process's device, or None for ``launcher='none'``.
    """
    if launcher == 'none':
        return None
    import torch.distributed as dist
    from mmengine.dist import init_dist
    if torch.cuda.is_available():
        init_dist(launcher, backend='nccl')
        return torch.device('cuda', torch.cuda.current_device())
    if launcher != 'pytorch':
        raise ValueError(f'without CUDA, launcher must be one of '
                         f"['none', 'pytorch'], got {launcher!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    return torch.device('cpu')

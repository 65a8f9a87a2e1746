"""Conversion of official VisionLLaMA checkpoints to this package's layout.

The official releases come in a few layouts (the docs/ sections are cited in
the converters' docstrings); this module turns each of them into state dicts
the package's models load, without any file I/O, so that both the command
line converters in ``tools/model_converters/`` and the loading-time
conversion of :mod:`visionllama_mm.weights` use one implementation.

Plain VisionLLaMA:

* mmpretrain style - the MAE epoch files (mmengine runner checkpoints) and
  fine-tune / linear-probe model files. Their keys already use the
  package's names (``backbone.patch_embed.projection``,
  ``backbone.layers.i.*``, ...); :func:`convert_mmpretrain` drops the unused
  ``pos_embed``, checks every key and shape against the model the shapes
  describe and can keep only the backbone.
* deit style - ``{'model', 'model_ema', 'optimizer', 'args', ...}`` files of
  the supervised plain models (``vit_llama_rope_*``). Names match
  :class:`~visionllama_mm.backbones.VisionLLaMADeiT`; :func:`convert_deit`
  with ``layout='mmpretrain'`` renames them for an mmpretrain
  ``ImageClassifier`` (``backbone.*`` and ``head.fc.*``).

Pyramid VisionLLaMA: the deit-format ``best_checkpoint.pth`` files;
:func:`convert_pyramid` places them with
:func:`~visionllama_mm.backbones.pyramid_vision_llama.checkpoint_filter_fn`.

Importing this module imports torch only.
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'ConversionError', 'extract_weights', 'detect_style', 'convert',
    'convert_mmpretrain', 'convert_deit', 'convert_pyramid',
    'infer_pyramid_arch', 'plain_meta'
]

STYLES = ('auto', 'mmpretrain', 'deit')
LAYOUTS = ('timm', 'mmpretrain')
WEIGHT_KEYS = ('auto', 'state_dict', 'model', 'model_ema', 'ema_state_dict')
UNUSED = ('pos_embed', )

StateDict = Dict[str, Tensor]


class ConversionError(ValueError):
    """The input does not have the layout of an official checkpoint."""


def extract_weights(ckpt: dict, key: str = 'auto') -> Tuple[StateDict, str]:
    """Pick the weights out of a checkpoint container.

    Args:
        ckpt (dict): The loaded file.
        key (str): ``'state_dict'`` (mmengine), ``'model'`` (deit),
            ``'model_ema'`` (deit EMA), ``'ema_state_dict'`` (mmengine
            EMAHook; the ``module.`` prefix and ``steps`` are removed), or
            ``'auto'``: the first of ``state_dict`` / ``model`` present, or
            the dict itself when it holds tensors only. Defaults to
            ``'auto'``.

    Returns:
        tuple: (state dict, the key it came from).
    """
    if key not in WEIGHT_KEYS:
        raise ConversionError(f'--key must be one of {list(WEIGHT_KEYS)}, '
                              f'got {key!r}')
    if not isinstance(ckpt, dict):
        raise ConversionError('the checkpoint is not a dict but a '
                              f'{type(ckpt).__name__}')
    if key == 'auto':
        for k in ('state_dict', 'model'):
            if isinstance(ckpt.get(k), dict):
                key = k
                break
        else:
            if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
                return OrderedDict(ckpt), 'root'
            raise ConversionError(
                'no weights found: expected a "state_dict" (mmengine) or '
                f'"model" (deit) entry, the file has {sorted(ckpt)}')
    if not isinstance(ckpt.get(key), dict):
        raise ConversionError(f'the checkpoint has no "{key}" entry (it has '
                              f'{sorted(ckpt)})')
    sd = ckpt[key]
    if key == 'ema_state_dict':
        sd = {
            k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in sd.items() if k != 'steps'
        }
    return OrderedDict(sd), key


def detect_style(sd: StateDict) -> str:
    """``'mmpretrain'`` or ``'deit'`` from the key names."""
    names = [
        k[len('backbone.'):] if k.startswith('backbone.') else k for k in sd
    ]
    if any(
            n.startswith('layers.') or n.startswith('patch_embed.projection')
            for n in names):
        return 'mmpretrain'
    if any(
            n.startswith('blocks.') or n.startswith('patch_embed.proj.')
            for n in names):
        return 'deit'
    raise ConversionError(
        'cannot tell the checkpoint style: no "layers.*" / '
        '"patch_embed.projection.*" (mmpretrain) or "blocks.*" / '
        f'"patch_embed.proj.*" (deit) keys; first keys: {list(sd)[:8]}')


def _split_backbone(sd: StateDict, prefix: str) -> Tuple[StateDict, StateDict]:
    inner, outer = OrderedDict(), OrderedDict()
    for k, v in sd.items():
        if k.startswith(prefix):
            inner[k[len(prefix):]] = v
        else:
            outer[k] = v
    return inner, outer


def _num_layers(sd: StateDict, block_prefix: str) -> int:
    ids = {
        int(m.group(1))
        for m in (re.match(re.escape(block_prefix) + r'(\d+)\.', k)
                  for k in sd) if m
    }
    if not ids:
        raise ConversionError(f'no "{block_prefix}<i>.*" keys found')
    return max(ids) + 1


def _require(sd: StateDict, key: str) -> Tensor:
    if key not in sd:
        raise ConversionError(f'missing key {key!r} (needed to infer the '
                              'architecture)')
    return sd[key]


def _compare(actual: StateDict, expected: Dict[str, torch.Size],
             what: str) -> None:
    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    mismatched = [
        f'{k}: {tuple(actual[k].shape)} vs {tuple(expected[k])}'
        for k in expected
        if k in actual and tuple(actual[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or mismatched:
        lines = [f'the {what} does not match the model its shapes describe:']
        if missing:
            lines.append(f'  missing keys: {missing}')
        if unexpected:
            lines.append(f'  unexpected keys: {unexpected}')
        if mismatched:
            lines.append(f'  shape mismatches: {mismatched}')
        raise ConversionError('\n'.join(lines))


def expected_mmpretrain_backbone(bb: StateDict) -> Dict[str, torch.Size]:
    """Key -> shape of the VisionLLaMA that ``bb``'s shapes describe."""
    from visionllama_mm.backbones import VisionLLaMA
    w = _require(bb, 'patch_embed.projection.weight')
    embed_dims, in_channels, patch = w.shape[0], w.shape[1], w.shape[2]
    hidden = _require(bb, 'layers.0.ffn.w3.weight').shape[1]
    with torch.device('meta'):
        model = VisionLLaMA(
            arch=dict(
                embed_dims=embed_dims,
                num_layers=_num_layers(bb, 'layers.'),
                num_heads=max(1, embed_dims // 64)),
            patch_size=patch,
            in_channels=in_channels,
            with_cls_token='cls_token' in bb,
            final_norm='ln1.weight' in bb,
            out_type='avg_featmap' if 'ln2.weight' in bb else 'raw',
            layer_cfgs=dict(ffn_hidden=hidden))
    return {k: v.shape for k, v in model.state_dict().items()}


def expected_deit(sd: StateDict) -> Dict[str, torch.Size]:
    """Key -> shape of the VisionLLaMADeiT that ``sd``'s shapes describe."""
    from visionllama_mm.backbones import VisionLLaMADeiT
    w = _require(sd, 'patch_embed.proj.weight')
    embed_dims, in_channels, patch = w.shape[0], w.shape[1], w.shape[2]
    num_classes = sd['head.weight'].shape[0] if 'head.weight' in sd else 0
    with torch.device('meta'):
        model = VisionLLaMADeiT(
            arch=dict(
                embed_dims=embed_dims,
                num_layers=_num_layers(sd, 'blocks.'),
                num_heads=max(1, embed_dims // 64)),
            patch_size=patch,
            in_channels=in_channels,
            num_classes=num_classes,
            layer_scale=1e-4 if 'blocks.0.gamma_1' in sd else None)
    return {k: v.shape for k, v in model.state_dict().items()}


def convert_mmpretrain(sd: StateDict,
                       backbone_only: bool = False) -> StateDict:
    """Convert an mmpretrain-style state dict (MAE / FT / LP).

    Args:
        sd (dict): Weights with ``backbone.`` keys (a bare backbone state
            dict is accepted too).
        backbone_only (bool): Keep only the backbone, without the
            ``backbone.`` prefix. Defaults to False.

    Returns:
        dict: The converted state dict.
    """
    prefixed = any(k.startswith('backbone.') for k in sd)
    bb, rest = _split_backbone(
        sd, 'backbone.') if prefixed else (OrderedDict(sd), OrderedDict())
    for name in UNUSED:
        bb.pop(name, None)
    _compare(bb, expected_mmpretrain_backbone(bb), 'mmpretrain backbone')
    if backbone_only:
        return bb
    out = OrderedDict(('backbone.' + k, v) for k, v in bb.items())
    out.update(rest)
    return out


def convert_deit(sd: StateDict, layout: str = 'timm') -> StateDict:
    """Convert a deit-style plain state dict (``vit_llama_rope_*``).

    Args:
        sd (dict): Weights with timm names (``blocks.i.*``, ``head.*``).
        layout (str): ``'timm'`` keeps the names (for
            :class:`VisionLLaMADeiT` with ``num_classes``); ``'mmpretrain'``
            writes ``backbone.*`` and ``head.fc.*`` for an ``ImageClassifier``
            with a ``LinearClsHead``. Defaults to ``'timm'``.

    Returns:
        dict: The converted state dict.
    """
    if layout not in LAYOUTS:
        raise ConversionError(f'--layout must be one of {list(LAYOUTS)}, '
                              f'got {layout!r}')
    sd = OrderedDict(
        (k[len('backbone.'):] if k.startswith('backbone.') else k, v)
        for k, v in sd.items())
    for name in UNUSED:
        sd.pop(name, None)
    _compare(sd, expected_deit(sd), 'deit-style state dict')
    if layout == 'timm':
        return sd
    out = OrderedDict()
    for k, v in sd.items():
        if k.startswith('head.'):
            out['head.fc.' + k[len('head.'):]] = v
        else:
            out['backbone.' + k] = v
    return out


def convert(ckpt: dict,
            style: str = 'auto',
            key: str = 'auto',
            backbone_only: bool = False,
            layout: str = 'timm') -> Tuple[StateDict, dict]:
    """Convert a loaded checkpoint; returns (state dict, meta)."""
    if style not in STYLES:
        raise ConversionError(f'--style must be one of {list(STYLES)}, '
                              f'got {style!r}')
    sd, source_key = extract_weights(ckpt, key)
    if style == 'auto':
        style = detect_style(sd)
    if style == 'mmpretrain':
        out = convert_mmpretrain(sd, backbone_only=backbone_only)
    else:
        out = convert_deit(sd, layout=layout)
    meta = dict(
        converter='visionllama_to_mmpretrain',
        style=style,
        source_key=source_key,
        backbone_only=bool(backbone_only) if style == 'mmpretrain' else None,
        layout=layout if style == 'deit' else None)
    return out, meta


def plain_meta(meta: Optional[dict]) -> dict:
    """Keep only plain Python values of the source ``meta``."""
    plain = {}
    for k, v in (meta or {}).items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            plain[str(k)] = v
    return plain


def infer_pyramid_arch(state_dict: StateDict) -> Optional[str]:
    """The pyramid arch zoo name whose stage widths and depths match."""
    from visionllama_mm.backbones import PyramidVisionLLaMA
    from visionllama_mm.backbones.pyramid_vision_llama import \
        checkpoint_filter_fn
    plain = checkpoint_filter_fn(state_dict, 'timm')
    dims = [
        plain[f'patch_embeds.{k}.proj.weight'].shape[0] for k in range(4)
        if f'patch_embeds.{k}.proj.weight' in plain
    ]
    depths = [
        len({
            key.split('.')[2]
            for key in plain if key.startswith(f'blocks.{k}.')
        }) for k in range(len(dims))
    ]
    for name in ('small', 'base', 'large'):
        arch = PyramidVisionLLaMA.arch_zoo[name]
        if arch['embed_dims'] == dims and arch['depths'] == depths:
            return name
    return None


def convert_pyramid(ckpt: dict,
                    fmt: str = 'mmpretrain',
                    key: str = 'auto') -> Tuple[StateDict, dict]:
    """Convert a loaded Pyramid VisionLLaMA checkpoint.

    Args:
        ckpt (dict): An official deit-format file (``{'model', 'args',
            ...}``) or an mmengine / mmseg / mmdet checkpoint whose
            ``state_dict`` holds ``backbone.*`` pyramid weights.
        fmt (str): ``'mmpretrain'`` (``backbone.*`` + ``head.fc.*``),
            ``'backbone'`` (``backbone.*`` without ``norm`` / ``head``) or
            ``'timm'`` (the original names). Defaults to ``'mmpretrain'``.
        key (str): The container entry holding the weights, see
            :func:`extract_weights`. Defaults to ``'auto'``.

    Returns:
        tuple: (state dict, plain-typed meta with ``format``,
        ``source_key``, ``arch`` and, when the file says so,
        ``upstream_model`` and ``epoch``).
    """
    from visionllama_mm.backbones.pyramid_vision_llama import \
        checkpoint_filter_fn
    weights, source_key = extract_weights(ckpt, key)
    state_dict = checkpoint_filter_fn(weights, fmt)
    if not state_dict:
        raise ConversionError('the checkpoint holds no Pyramid VisionLLaMA '
                              'weights')
    meta = dict(
        format=fmt,
        source_key=source_key,
        arch=str(infer_pyramid_arch(state_dict)))
    args = ckpt.get('args')
    if getattr(args, 'model', None) is not None:
        meta['upstream_model'] = str(args.model)
    if isinstance(ckpt.get('epoch'), int):
        meta['epoch'] = ckpt['epoch']
    return state_dict, meta

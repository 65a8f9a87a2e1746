"""Official DiT-LLaMA / SiT-LLaMA checkpoints to this package's format.

The released files (docs/generation.md#training-and-sampling,
docs/generation.md#checkpoint-layout) are training snapshots ``{'model', 'ema',
'opt', 'args'}`` (``args`` an ``argparse.Namespace``). Sampling uses the
``ema`` weights. The keys already equal our network's parameter names; only the
unused ``pos_embed`` is dropped. The output is tensors plus plain metadata,
loadable with ``torch.load(weights_only=True)``.
"""
import argparse
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from visionllama_mm.utils import check_choice

__all__ = [
    'load_official_checkpoint', 'convert_official_state_dict',
    'verify_state_dict', 'official_meta'
]

DROP_KEYS = ('pos_embed', )


def load_official_checkpoint(path: str) -> dict:
    """Load an official file without unpickling arbitrary objects.

    Uses :func:`visionllama_mm.compat.load_checkpoint_safe` when available
    (it allow-lists ``argparse.Namespace``), else ``torch.load`` with
    ``weights_only=True`` and ``argparse.Namespace`` allow-listed.
    """
    try:
        from visionllama_mm.compat import load_checkpoint_safe
    except ImportError:
        load_checkpoint_safe = None
    if load_checkpoint_safe is not None:
        return load_checkpoint_safe(path, map_location='cpu', trusted=False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def official_meta(ckpt: dict) -> dict:
    """Plain-typed metadata (model name, image size, classes) from ``args``."""
    args = ckpt.get('args') if isinstance(ckpt, dict) else None
    if args is None:
        return {}
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {
        k: args[k]
        for k in ('model', 'image_size', 'num_classes', 'path_type',
                  'prediction', 'loss_weight', 'vae')
        if k in args and isinstance(args[k], (str, int, float, bool))
    }


def convert_official_state_dict(ckpt: dict,
                                weights: str = 'ema',
                                prefix: str = ''
                                ) -> 'OrderedDict[str, Tensor]':
    """Extract and rename the network weights of an official checkpoint.

    Args:
        ckpt (dict): The loaded file: a ``{'model', 'ema', ...}`` snapshot
            or a bare state dict.
        weights (str): ``'ema'`` (the sampling weights) or ``'model'``.
            Defaults to ``'ema'``.
        prefix (str): Prefix for every output key (``'net.'`` for the mmagic
            face). Defaults to ``''``.

    Returns:
        OrderedDict[str, Tensor]: Contiguous tensors, ``pos_embed`` dropped.
    """
    check_choice('weights', weights, ['ema', 'model'])
    if weights in ckpt and isinstance(ckpt[weights], dict):
        state = ckpt[weights]
    elif all(isinstance(v, Tensor) for v in ckpt.values()):
        state = ckpt
    else:
        raise KeyError(f'checkpoint has no {weights!r} entry; keys: '
                       f'{sorted(ckpt)}')
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith('module.'):  # DDP-wrapped snapshots
            k = k[len('module.'):]
        if k in DROP_KEYS:
            continue
        out[prefix + k] = v.detach().clone().contiguous()
    return out


def verify_state_dict(state: Dict[str, Tensor],
                      model: nn.Module,
                      prefix: str = '') -> Tuple[list, list, list]:
    """Compare keys and shapes with a (possibly meta-device) network.

    Raises:
        ValueError: listing missing / unexpected keys and shape mismatches.
    """
    ours = {prefix + k: v for k, v in model.state_dict().items()}
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    mismatched = sorted(
        f'{k}: {tuple(state[k].shape)} vs {tuple(ours[k].shape)}'
        for k in set(ours) & set(state) if state[k].shape != ours[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(f'checkpoint does not fit the model: missing '
                         f'{missing[:8]}, unexpected {unexpected[:8]}, '
                         f'shape mismatches {mismatched[:8]}')
    return missing, unexpected, mismatched


def build_for_meta(meta: dict, name: Optional[str] = None) -> nn.Module:
    """Build the named official network on the meta device for checks."""
    from .models import build_generator
    name = name or meta.get('model')
    if not name:
        raise ValueError('the checkpoint has no args.model: pass --model')
    image_size = int(meta.get('image_size', 256))
    with torch.device('meta'):
        return build_generator(
            name,
            input_size=image_size // 8,
            num_classes=int(meta.get('num_classes', 1000)))


def convert_main(argv=None, family: str = 'DiTLLaMA') -> str:
    """Command line of the converters in ``tools/model_converters/``."""
    parser = argparse.ArgumentParser(
        description=f'Convert an official {family} checkpoint '
        "({'model', 'ema', 'opt', 'args'}) into a tensors-only file.")
    parser.add_argument('src', help='official .pt file')
    parser.add_argument('dst', help='output .pth file')
    parser.add_argument(
        '--weights',
        default='ema',
        choices=['ema', 'model'],
        help='which weights to keep (sampling uses ema)')
    parser.add_argument(
        '--prefix',
        default='net.',
        help="key prefix; 'net.' loads into the registered mmagic-face "
        "model (configs/dit_llama, configs/sit_llama), '' gives the bare "
        'network of visionllama_mm.generation.models')
    parser.add_argument(
        '--model',
        default=None,
        help=f'{family} name to verify against (default: args.model)')
    parser.add_argument(
        '--no-verify',
        action='store_true',
        help='skip the key / shape check against the named network')
    args = parser.parse_args(argv)

    ckpt = load_official_checkpoint(args.src)
    meta = official_meta(ckpt)
    state = convert_official_state_dict(ckpt, args.weights, args.prefix)
    if not args.no_verify:
        name = args.model or meta.get('model')
        if name and not name.startswith(family):
            raise ValueError(f'{name!r} is not a {family} model; use the '
                             'other converter or --model')
        verify_state_dict(state, build_for_meta(meta, name), args.prefix)
    meta.update(source=str(args.src), weights=args.weights)
    torch.save({'state_dict': state, 'meta': meta}, args.dst)
    print(f'saved {len(state)} tensors ({args.weights} weights) to '
          f'{args.dst}')
    return args.dst

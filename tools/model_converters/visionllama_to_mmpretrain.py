"""Convert official plain VisionLLaMA checkpoints to tensors-only files.

Inputs (docs/visionllama.md#checkpoint-layouts):

* mmpretrain style - the MAE epoch files (mmengine runner checkpoints that
  pickle message hubs, ``HistoryBuffer`` and numpy objects), and fine-tune /
  linear-probe model files. Their keys already use the package's names
  (``backbone.patch_embed.projection``, ``backbone.layers.i.*``, ...); the
  converter extracts the weights, drops the unused ``pos_embed`` and can keep
  only the backbone (``--backbone-only``, prefix ``backbone.`` stripped).
* deit style - ``{'model', 'model_ema', 'optimizer', 'args', ...}`` files of
  the supervised plain models (``vit_llama_rope_*``). Names match
  :class:`~visionllama_mm.backbones.VisionLLaMADeiT`; ``--layout mmpretrain``
  renames them for an mmpretrain ``ImageClassifier`` (``backbone.*`` and
  ``head.fc.*``).

The conversion itself lives in :mod:`visionllama_mm.converters` (the same
code converts these files while loading them through mmengine, see
:mod:`visionllama_mm.weights`); this script writes converted files.
The source is read with :func:`visionllama_mm.compat.load_checkpoint_safe`
(``weights_only=True`` with a small allow-list; ``--trusted`` allows a full
unpickle of a file you trust). The backbone keys are checked against the
model the shapes describe; anything that does not fit is reported by name.
The output is ``{'state_dict': ..., 'meta': {...}}`` with tensors and plain
Python values only, so it loads with ``torch.load(weights_only=True)`` and
through ``init_cfg=dict(type='Pretrained', ...)``.

Example::

    python tools/model_converters/visionllama_to_mmpretrain.py \\
        epoch_800.pth visionllama-base-p16_mae800.pth
"""
import argparse
from typing import List, Optional

import torch

from visionllama_mm.converters import (LAYOUTS, STYLES, UNUSED, WEIGHT_KEYS,
                                       ConversionError, convert, convert_deit,
                                       convert_mmpretrain, detect_style,
                                       extract_weights, plain_meta)

# The names this script offered before the conversion moved into
# visionllama_mm.converters.
__all__ = [
    'LAYOUTS', 'STYLES', 'UNUSED', 'WEIGHT_KEYS', 'ConversionError', 'convert',
    'convert_deit', 'convert_mmpretrain', 'detect_style', 'extract_weights',
    'parse_args', 'main'
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert official plain VisionLLaMA checkpoints (MAE '
        'epoch files, fine-tune / linear-probe models, deit-style models) '
        'to tensors-only files')
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument(
        '--style', default='auto', choices=STYLES, help='input style')
    parser.add_argument(
        '--key',
        default='auto',
        choices=WEIGHT_KEYS,
        help='container entry holding the weights')
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='mmpretrain style: keep only the backbone, without the '
        '"backbone." prefix')
    parser.add_argument(
        '--layout',
        default='timm',
        choices=LAYOUTS,
        help='deit style: keep timm names or write an mmpretrain '
        'ImageClassifier layout')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='allow a full (unsafe) unpickle of the source if the safe '
        'loader refuses it; only for files you trust')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    from visionllama_mm.compat import load_checkpoint_safe
    args = parse_args(argv)
    ckpt = load_checkpoint_safe(
        args.src, map_location='cpu', trusted=args.trusted)
    sd, meta = convert(ckpt, args.style, args.key, args.backbone_only,
                       args.layout)
    src_meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    meta['source_meta'] = plain_meta(
        src_meta if isinstance(src_meta, dict) else None)
    torch.save({'state_dict': sd, 'meta': meta}, args.dst)
    print(f'wrote {len(sd)} tensors ({meta["style"]} style, from '
          f'"{meta["source_key"]}") to {args.dst}')


if __name__ == '__main__':
    main()

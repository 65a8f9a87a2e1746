"""Convert Pyramid VisionLLaMA checkpoints for visionllama_mm.

Input: an official deit-format checkpoint (``mtgv/Pyramid-VisionLLaMA-*/
best_checkpoint.pth``: ``{'model', 'optimizer', 'lr_scheduler', 'epoch',
'scaler', 'args'}`` with an ``argparse.Namespace``), or an mmengine / mmseg /
mmdet checkpoint whose ``state_dict`` holds ``backbone.*`` pyramid weights.
It is read with :func:`visionllama_mm.compat.load_checkpoint_safe`
(``weights_only`` with an allow-list; ``--trusted`` only for files you
trust). Output: a tensors-only file ``{'state_dict': ..., 'meta': ...}``
safe under ``torch.load(weights_only=True)``:

* ``--format mmpretrain`` (default): ``backbone.*`` + ``head.fc.*`` for
  ``ImageClassifier(backbone=PyramidVisionLLaMA, head=LinearClsHead)``;
* ``--format backbone``: ``backbone.*`` without ``norm`` / ``head`` for the
  mmseg / mmdet backbones (``init_cfg=dict(type='Pretrained',
  checkpoint=..., prefix='backbone.')``);
* ``--format timm``: the original names, for
  ``PyramidVisionLLaMA(num_classes=1000)`` outside OpenMMLab.

The conversion lives in :func:`visionllama_mm.converters.convert_pyramid`,
which also converts these files while loading them through mmengine
(:mod:`visionllama_mm.weights`); this script writes converted files.

Example::

    python tools/model_converters/pyramid_visionllama_to_mmpretrain.py \\
        best_checkpoint.pth pyramid-visionllama-s_in1k.pth
"""
import argparse
import os.path as osp
from typing import Optional, Sequence

import torch

from visionllama_mm.compat import load_checkpoint_safe
from visionllama_mm.converters import WEIGHT_KEYS, convert_pyramid


def convert(src: str,
            dst: str,
            fmt: str = 'mmpretrain',
            key: str = 'auto',
            trusted: bool = False) -> dict:
    """Convert ``src`` into ``dst``; returns the written dict."""
    checkpoint = load_checkpoint_safe(src, map_location='cpu', trusted=trusted)
    state_dict, meta = convert_pyramid(checkpoint, fmt, key)
    meta = dict(converted_from=osp.basename(src), **meta)
    out = dict(state_dict=state_dict, meta=meta)
    torch.save(out, dst)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert Pyramid VisionLLaMA checkpoints (official deit '
        'format or mmengine) to tensors-only visionllama_mm files.')
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument(
        '--format',
        default='mmpretrain',
        choices=['mmpretrain', 'backbone', 'timm'],
        help='mmpretrain: backbone.* + head.fc.* (ImageClassifier); '
        'backbone: backbone.* without norm/head (mmseg/mmdet); '
        'timm: original names')
    parser.add_argument(
        '--key',
        default='auto',
        choices=WEIGHT_KEYS,
        help='container entry holding the weights (auto: state_dict or '
        'model)')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='unpickle arbitrary objects (only for files you trust)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    out = convert(args.src, args.dst, args.format, args.key, args.trusted)
    meta = out['meta']
    print(f'{args.dst}: {len(out["state_dict"])} tensors, format '
          f'{meta["format"]}, arch {meta["arch"]}')


if __name__ == '__main__':
    main()

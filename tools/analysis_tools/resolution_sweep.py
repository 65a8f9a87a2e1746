"""Evaluate a classification checkpoint across test resolutions.

For every test size and every position scheme that applies to the backbone
(2D RoPE / AS2DRoPE for VisionLLaMA, bicubic / bilinear interpolation of the
learned table for mmpretrain's ViT / DeiT), print the held-out top-1 as a
table and write a PNG plot (accuracy vs resolution, one line per variant).

Usage::

    python tools/analysis_tools/resolution_sweep.py CONFIG CKPT \
        [--sizes 28 42 56 | --scales 1 1.5 2] [--variants 2d-rope as2drope] \
        [--out-dir DIR]

Works with any mmpretrain ``ImageClassifier`` config of this package and
with mmpretrain's own ViT / DeiT configs (``mmpretrain::vit/...``) as the
baseline; see :mod:`visionllama_mm.analysis.resolution`.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction

from visionllama_mm.analysis.resolution import format_table, plot_sweep, sweep


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'config',
        help='classification config (a path, or e.g. '
        'mmpretrain::deit/deit-tiny_4xb256_in1k.py)')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        '--sizes', type=int, nargs='+', help='test sizes in pixels')
    size.add_argument(
        '--scales',
        type=float,
        nargs='+',
        default=[1., 1.5, 2.],
        help='test sizes as multiples of the training size (default: 1 '
        '1.5 2)')
    parser.add_argument(
        '--variants',
        nargs='+',
        help='position schemes to evaluate (default: all that apply)')
    parser.add_argument(
        '--train-size',
        type=int,
        help='training resolution (default: the test pipeline size)')
    parser.add_argument(
        '--max-batches',
        type=int,
        help='evaluate only this many test batches per size')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/resolution_sweep',
        help='where the PNG and the JSON rows are written')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if '::' in args.config:  # e.g. mmpretrain::deit/deit-tiny_...py
        from mmengine.hub import get_config
        cfg = get_config(args.config)
    else:
        cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    rows = sweep(
        cfg,
        args.checkpoint,
        sizes=args.sizes,
        scales=args.scales,
        variants=args.variants,
        train_size=args.train_size,
        max_batches=args.max_batches)
    name = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
    print(f'\nHeld-out top-1 (%) of {args.checkpoint}\n')
    print(format_table(rows))
    os.makedirs(args.out_dir, exist_ok=True)
    png = plot_sweep(
        rows,
        osp.join(args.out_dir, f'{name}_resolution.png'),
        title=f'{name}: top-1 vs test resolution')
    with open(osp.join(args.out_dir, f'{name}_resolution.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    print(f'\nplot: {png}')
    return rows


if __name__ == '__main__':
    main()

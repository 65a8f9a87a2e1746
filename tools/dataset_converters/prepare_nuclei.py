"""Prepare the real nuclei image shipped in the stardist wheel for mmseg/mmdet.

The stardist wheel (BSD-3-Clause) embeds one 512 x 512 fluorescence
microscopy image of cell nuclei with 125 hand-labelled instances
(``stardist/data/images/img2d.tif`` + ``mask2d.tif``). This tool fetches the
wheel with ``pip download --no-deps`` (cached), extracts the two TIFFs and
writes two dense-prediction datasets:

* ``<out>/semantic``: ADE20K-style semantic split (``img_dir/{train,val}``
  and ``ann_dir/{train,val}`` PNGs, label 0 = background, 1 = nucleus), for
  mmseg's ``BaseSegDataset``;
* ``<out>/instance``: COCO-style instance split (``images/{train,val}`` PNGs
  and ``annotations/instances_{train,val}.json`` with RLE masks), for mmdet's
  ``CocoDataset``.

Train and val never share pixels: the rightmost ``val_width`` columns of
the image form the val region (non-overlapping tiles), the rest the train
region (tiles with ``train_stride``). Instances cut by a tile border keep
their visible part; fragments smaller than ``min_area`` pixels are dropped
from the instance split (their pixels stay nucleus in the semantic split).

Usage::

    python tools/dataset_converters/prepare_nuclei.py [--out data/nuclei]
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

WHEEL_MEMBERS = {
    'image': 'stardist/data/images/img2d.tif',
    'mask': 'stardist/data/images/mask2d.tif',
}
CLASSES_SEMANTIC = ('background', 'nucleus')
CLASSES_INSTANCE = ('nucleus', )


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/visionllama_mm/wheels`` (``~/.cache`` default)."""
    root = os.environ.get('XDG_CACHE_HOME', osp.expanduser('~/.cache'))
    return osp.join(root, 'visionllama_mm', 'wheels')


class FetchError(RuntimeError):
    """The stardist wheel could not be downloaded (no network / pip)."""


# the release the splits (and the bounds of the slow dense tests) were made
# with; an unpinned download could change the data under the tests
STARDIST_SPEC = 'stardist==0.9.2'


def fetch_stardist_wheel(cache_dir: Optional[str] = None,
                         spec: str = STARDIST_SPEC,
                         timeout: int = 120) -> str:
    """Return the path of a cached stardist wheel, downloading it if needed.

    Args:
        cache_dir (str, optional): Where wheels are kept. Defaults to
            :func:`default_cache_dir`.
        spec (str): pip requirement to download. Defaults to
            :data:`STARDIST_SPEC`.
        timeout (int): pip network timeout in seconds. Defaults to 120.

    Returns:
        str: Path of the ``.whl`` file.
    """
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    version = spec.split('==')[1] if '==' in spec else '*'
    pattern = osp.join(cache_dir, f'stardist-{version}-*.whl')
    wheels = sorted(glob.glob(pattern))
    if wheels:
        return wheels[-1]
    cmd = [
        sys.executable, '-m', 'pip', 'download', '--no-deps',
        '--only-binary=:all:', '--disable-pip-version-check', '--timeout',
        str(timeout), '-d', cache_dir, spec
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout * 3)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f'`{" ".join(cmd)}` failed: {e}') from e
    wheels = sorted(glob.glob(pattern))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f'`{" ".join(cmd)}` failed (exit '
                         f'{proc.returncode}): {" | ".join(tail)}')
    return wheels[-1]


def read_wheel_images(wheel: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read the 2D nuclei image and its label mask out of the wheel.

    Args:
        wheel (str): Path of a stardist wheel.

    Returns:
        tuple[np.ndarray, np.ndarray]: The (H, W) image (raw dtype) and the
        (H, W) int32 instance label map (0 = background).
    """
    import tifffile
    with zipfile.ZipFile(wheel) as zf:
        with zf.open(WHEEL_MEMBERS['image']) as f:
            image = tifffile.imread(f)
        with zf.open(WHEEL_MEMBERS['mask']) as f:
            mask = tifffile.imread(f)
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f'unexpected shapes: image {image.shape}, mask '
                         f'{mask.shape}')
    return image, mask.astype(np.int32)


def to_rgb8(image: np.ndarray,
            low: float = 1.,
            high: float = 99.8) -> np.ndarray:
    """Percentile-normalise a grey image to uint8 RGB (H, W, 3)."""
    lo, hi = np.percentile(image.astype(np.float64), (low, high))
    x = (image.astype(np.float64) - lo) / max(hi - lo, 1e-6)
    x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=2)


def tile_origins(height: int, width: int, tile: int, val_width: int,
                 train_stride: int) -> Dict[str, List[Tuple[int, int]]]:
    """Top-left (y, x) corners of the train and val tiles.

    The val region is the rightmost ``val_width`` columns, tiled without
    overlap; the train region is the rest, tiled with ``train_stride``.
    """
    if val_width % tile or height % tile or val_width >= width:
        raise ValueError('val_width and the image height must be multiples '
                         f'of tile ({tile}) and val_width < width; got '
                         f'val_width={val_width}, shape=({height}, {width})')
    train_w = width - val_width
    if train_w < tile:
        raise ValueError(f'the train region ({train_w} columns) is narrower '
                         f'than one tile ({tile})')

    def starts(size):
        s = list(range(0, size - tile + 1, train_stride))
        if s[-1] != size - tile:
            s.append(size - tile)
        return s

    train = [(y, x) for y in starts(height) for x in starts(train_w)]
    val = [(y, x) for y in range(0, height, tile)
           for x in range(train_w, width, tile)]
    return dict(train=train, val=val)


def _save_png(path: str, array: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def write_semantic(out: str, rgb: np.ndarray, labels: np.ndarray,
                   origins: Dict[str, List[Tuple[int, int]]],
                   tile: int) -> Dict[str, int]:
    """ADE20K-style split: img_dir / ann_dir PNGs (0 background, 1 nucleus).

    Returns:
        dict: Number of tiles per split.
    """
    counts = {}
    for split, corners in origins.items():
        for y, x in corners:
            name = f'nuclei_{split}_y{y:03d}_x{x:03d}.png'
            img = rgb[y:y + tile, x:x + tile]
            ann = (labels[y:y + tile, x:x + tile] > 0).astype(np.uint8)
            _save_png(osp.join(out, 'img_dir', split, name), img)
            _save_png(osp.join(out, 'ann_dir', split, name), ann)
        counts[split] = len(corners)
    return counts


def instance_annotations(labels: np.ndarray, min_area: int, start_id: int,
                         image_id: int) -> List[dict]:
    """COCO annotations (RLE masks) of the instances of one label tile."""
    from pycocotools import mask as mask_utils
    anns = []
    for inst in np.unique(labels):
        if inst == 0:
            continue
        binary = np.asfortranarray((labels == inst).astype(np.uint8))
        area = int(binary.sum())
        if area < min_area:
            continue
        rle = mask_utils.encode(binary)
        rle['counts'] = rle['counts'].decode('ascii')
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        anns.append(
            dict(
                id=start_id + len(anns),
                image_id=image_id,
                category_id=1,
                segmentation=rle,
                area=area,
                bbox=[x, y, w, h],
                iscrowd=0))
    return anns


def write_instance(out: str, rgb: np.ndarray, labels: np.ndarray,
                   origins: Dict[str, List[Tuple[int, int]]], tile: int,
                   min_area: int) -> Dict[str, Tuple[int, int]]:
    """COCO-style split: images/{split}/*.png + instances_{split}.json.

    Returns:
        dict: (number of images, number of instances) per split.
    """
    counts = {}
    for split, corners in origins.items():
        images, anns = [], []
        for y, x in corners:
            image_id = len(images) + 1
            name = f'nuclei_{split}_y{y:03d}_x{x:03d}.png'
            _save_png(
                osp.join(out, 'images', split, name), rgb[y:y + tile,
                                                          x:x + tile])
            images.append(
                dict(id=image_id, file_name=name, height=tile, width=tile))
            anns += instance_annotations(labels[y:y + tile, x:x + tile],
                                         min_area,
                                         len(anns) + 1, image_id)
        coco = dict(
            info=dict(
                description='stardist img2d/mask2d nuclei, tiled',
                url='https://pypi.org/project/stardist/'),
            licenses=[dict(id=1, name='BSD-3-Clause')],
            images=images,
            annotations=anns,
            categories=[
                dict(id=i + 1, name=c, supercategory='cell')
                for i, c in enumerate(CLASSES_INSTANCE)
            ])
        path = osp.join(out, 'annotations', f'instances_{split}.json')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(coco, f)
        counts[split] = (len(images), len(anns))
    return counts


def prepare(out: str = 'data/nuclei',
            cache_dir: Optional[str] = None,
            wheel: Optional[str] = None,
            tile: int = 128,
            val_width: int = 128,
            train_stride: int = 64,
            min_area: int = 8) -> dict:
    """Fetch (if needed) the wheel and write both splits under ``out``.

    Args:
        out (str): Output root. Defaults to 'data/nuclei'.
        cache_dir (str, optional): Wheel cache. Defaults to
            :func:`default_cache_dir`.
        wheel (str, optional): Use this local stardist wheel instead of
            downloading. Defaults to None.
        tile (int): Tile side in pixels. Defaults to 128.
        val_width (int): Width of the val region (right columns). Defaults
            to 128.
        train_stride (int): Stride of the train tiles. Defaults to 64.
        min_area (int): Smallest instance fragment kept in the instance
            split, in pixels. Defaults to 8.

    Returns:
        dict: Summary (source wheel, image shape, instances, tile counts).
    """
    wheel = wheel or fetch_stardist_wheel(cache_dir)
    image, labels = read_wheel_images(wheel)
    rgb = to_rgb8(image)
    origins = tile_origins(*labels.shape, tile, val_width, train_stride)
    sem = write_semantic(osp.join(out, 'semantic'), rgb, labels, origins, tile)
    ins = write_instance(
        osp.join(out, 'instance'), rgb, labels, origins, tile, min_area)
    summary = dict(
        wheel=osp.basename(wheel),
        image_shape=list(labels.shape),
        num_instances=int(len(np.unique(labels)) - 1),
        tile=tile,
        semantic=sem,
        instance={
            k: dict(images=v[0], instances=v[1])
            for k, v in ins.items()
        })
    with open(osp.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write semantic (ADE20K-style) and instance (COCO-style)'
        ' nuclei splits from the image embedded in the stardist wheel.')
    parser.add_argument('--out', default='data/nuclei', help='output root')
    parser.add_argument(
        '--cache-dir',
        default=None,
        help=f'wheel cache (default {default_cache_dir()})')
    parser.add_argument(
        '--wheel', default=None, help='use this local stardist wheel')
    parser.add_argument('--tile', type=int, default=128)
    parser.add_argument('--val-width', type=int, default=128)
    parser.add_argument('--train-stride', type=int, default=64)
    parser.add_argument('--min-area', type=int, default=8)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = prepare(args.out, args.cache_dir, args.wheel, args.tile,
                      args.val_width, args.train_stride, args.min_area)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()

"""Draw MAE reconstructions of a few images as a PNG grid.

Each row is one image; the columns are the original, the masked input (the
patches the encoder sees), the decoder's reconstruction, and the
reconstruction with the visible patches pasted back. Works with any
mmpretrain ``MAE`` model (``MAELLaMA`` or ``MAEViT`` encoder) and an MAE
checkpoint as written by ``tools/train.py`` or released (``epoch_N.pth``),
loaded strictly through mmengine with
:func:`visionllama_mm.weights.load_strict`: a file that does not fill the
whole MAE (e.g. a converted backbone-only file) is refused.

With ``norm_pix`` heads the decoder predicts per-patch normalised pixels; as
in the usual MAE visualisations they are mapped back to pixels with the mean
and variance of the original patch.

Example::

    CFG=mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px
    python tools/analysis_tools/mae_reconstruction.py \\
        configs/mae_visionllama/$CFG.py work_dirs/$CFG/epoch_10.pth \\
        --out grid.png --num-images 6
"""
import argparse
import copy
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch
from mmengine.config import Config, DictAction

COLUMNS = ('original', 'masked', 'reconstruction', 'recon. + visible')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write a PNG grid of MAE reconstructions '
        '(original / masked / reconstruction / reconstruction + visible).')
    parser.add_argument('config', help='MAE config file')
    parser.add_argument('checkpoint', help='MAE checkpoint (epoch_N.pth)')
    parser.add_argument(
        '--out', default='mae_reconstruction.png', help='output PNG path')
    parser.add_argument(
        '--images',
        nargs='+',
        default=None,
        help='image files; default: --num-images images evenly spread over '
        'the config\'s training set')
    parser.add_argument(
        '--num-images',
        type=int,
        default=4,
        help='rows of the grid (dataset images)')
    parser.add_argument(
        '--mask-ratio',
        type=float,
        default=None,
        help='override the encoder\'s mask ratio')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the random masks')
    parser.add_argument(
        '--tile',
        type=int,
        default=96,
        help='minimum tile side in pixels (nearest upscale)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='allow full unpickling of the checkpoint (trusted files only)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, xxx=yyy format')
    return parser.parse_args(argv)


def deterministic_pipeline(pipeline: list) -> list:
    """The training pipeline without its random transforms.

    ``RandomResizedCrop(scale=s)`` becomes a short-edge resize to ``s`` and a
    centre crop; random flips are dropped; everything else is kept.
    """
    out = []
    for t in pipeline:
        t = copy.deepcopy(t)
        kind = str(t.get('type', '')).split('.')[-1]
        if kind == 'RandomResizedCrop':
            size = t['scale']
            size = size if isinstance(size, int) else size[0]
            out.append(
                dict(
                    type='ResizeEdge',
                    scale=size,
                    edge='short',
                    backend=t.get('backend', 'cv2'),
                    interpolation=t.get('interpolation', 'bilinear')))
            out.append(dict(type='CenterCrop', crop_size=size))
        elif kind in ('RandomFlip', 'RandomGrayscale', 'ColorJitter'):
            continue
        else:
            out.append(t)
    return out


def collect_inputs(cfg: Config, args: argparse.Namespace) -> list:
    """Packed samples (dicts with ``inputs``) from files or the dataset."""
    from mmengine.dataset import Compose
    from mmpretrain.registry import DATASETS

    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    pipeline = deterministic_pipeline(ds_cfg.pop('pipeline'))
    if args.images:
        if pipeline and 'LoadImage' not in str(pipeline[0].get('type')):
            pipeline.insert(0, dict(type='LoadImageFromFile'))
        compose = Compose(pipeline)
        return [compose(dict(img_path=p)) for p in args.images]
    ds_cfg['pipeline'] = pipeline
    dataset = DATASETS.build(ds_cfg)
    # spread over the dataset (sorted datasets show several classes)
    n = min(args.num_images, len(dataset))
    index = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    return [dataset[int(i)] for i in index]


@torch.no_grad()
def reconstruct(model, inputs: torch.Tensor, seed: int = 0) -> dict:
    """Run an MAE model on normalised images.

    Args:
        model: mmpretrain ``MAE`` (backbone, neck, head).
        inputs (Tensor): (B, C, H, W) normalised images.
        seed (int): Seed of the random masks.

    Returns:
        dict: ``masked``, ``recon`` and ``pasted`` images and the pixel
        ``mask`` (1 = removed), all (B, C, H, W) in the normalised space.
    """
    head = model.head
    torch.manual_seed(seed)
    latent, mask, ids_restore = model.backbone(inputs)
    pred = model.neck(latent, ids_restore)  # (B, L, p*p*C)
    if getattr(head, 'norm_pix', False):
        target = head.patchify(inputs)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.e-6)**.5 + mean
    recon = head.unpatchify(pred)
    mask_px = head.unpatchify(mask[...,
                                   None].expand(-1, -1,
                                                pred.shape[-1]).to(pred.dtype))
    return dict(
        mask=mask_px,
        masked=inputs * (1 - mask_px),
        recon=recon,
        pasted=inputs * (1 - mask_px) + recon * mask_px)


def to_uint8(x: torch.Tensor,
             mean,
             std,
             masked: Optional[torch.Tensor] = None) -> np.ndarray:
    """(C, H, W) normalised tensor -> (H, W, 3) uint8 RGB.

    Removed patches (``masked`` = 1) are drawn mid-grey.
    """
    img = x.float().cpu() * std + mean
    if masked is not None:
        img = torch.where(masked.cpu() > 0, torch.full_like(img, 127.), img)
    img = img.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


def make_grid(rows: List[List[np.ndarray]],
              tile: int = 96,
              pad: int = 4,
              header: bool = True) -> np.ndarray:
    """Tile equally sized uint8 images into one (H, W, 3) array."""
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    scale = max(1, int(np.ceil(tile / max(h, w))))
    th, tw = h * scale, w * scale
    top = 16 if header else 0
    ncol = len(rows[0])
    canvas = Image.new('RGB', (ncol * (tw + pad) + pad, top + len(rows) *
                               (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c in range(ncol):
        if header:
            draw.text((pad + c * (tw + pad), 2), COLUMNS[c], fill=(0, 0, 0))
        for r, row in enumerate(rows):
            tile_img = Image.fromarray(row[c]).resize((tw, th), Image.NEAREST)
            canvas.paste(tile_img,
                         (pad + c * (tw + pad), top + pad + r * (th + pad)))
    return np.asarray(canvas)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    from mmengine.dataset import default_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from PIL import Image

    import visionllama_mm  # noqa: F401  (registers our models)
    from visionllama_mm.weights import load_strict

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))

    model = MODELS.build(cfg.model)
    if args.trusted:  # torch's own switch, honoured by mmengine's loader
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    load_strict(model, args.checkpoint, map_location='cpu')
    if args.mask_ratio is not None:
        model.backbone.mask_ratio = args.mask_ratio
    model.to(args.device).eval()

    samples = collect_inputs(cfg, args)
    # MAE configs collate with default_collate (stacked uint8 images)
    data = model.data_preprocessor(default_collate(samples), training=False)
    inputs = data['inputs']
    inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    out = reconstruct(model, inputs.to(args.device), seed=args.seed)

    pre = model.data_preprocessor
    mean = pre.mean.view(-1, 1, 1).cpu() if pre._enable_normalize else 0.
    std = pre.std.view(-1, 1, 1).cpu() if pre._enable_normalize else 1.
    rows = []
    for i in range(inputs.shape[0]):
        rows.append([
            to_uint8(inputs[i], mean, std),
            to_uint8(out['masked'][i], mean, std, masked=out['mask'][i]),
            to_uint8(out['recon'][i], mean, std),
            to_uint8(out['pasted'][i], mean, std),
        ])
    grid = make_grid(rows, tile=args.tile)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f'wrote {args.out} ({grid.shape[1]}x{grid.shape[0]}, '
          f'{len(rows)} images)')
    return args.out


if __name__ == '__main__':
    main()

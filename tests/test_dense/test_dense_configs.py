"""Every shipped dense config builds its model and runs one forward.

The forward is a training-mode loss at a reduced input size (64 x 64 for
segmentation, 128 x 128 for detection; the recipe architectures are kept).
Configs that use the layer-decay constructor also build their optimizer,
which checks ``num_layers`` against the backbone inside the mmseg / mmdet
model.
"""
import copy
import glob
import os.path as osp

import pytest
import torch

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOLDERS = ('upernet_visionllama', 'mask_rcnn_pyramid_visionllama',
           'vitdet_visionllama')
QUICKSTART_PREFIXES = ('upernet_', 'mask-rcnn_', 'vitdet_')


def dense_configs():
    paths = []
    for folder in FOLDERS:
        paths += glob.glob(osp.join(ROOT, 'configs', folder, '*.py'))
    paths += [
        p for p in glob.glob(osp.join(ROOT, 'configs', 'quickstart', '*.py'))
        if osp.basename(p).startswith(QUICKSTART_PREFIXES)
    ]
    return sorted(paths)


CONFIGS = dense_configs()
# Plain VisionLLaMA-L (914M-parameter backbone): building all 24 blocks
# takes tens of seconds on 2 CPU cores, so the default suite builds these
# configs with 4 of the 24 blocks (width, heads, SwiGLU width, neck and
# heads as shipped) and remaps the block indices the config names.
REDUCED_DEPTH = ('visionllama-large-p16', )
REDUCED_LAYERS = 4


def reduce_depth(cfg):
    """Shrink a plain-L config to ``REDUCED_LAYERS`` blocks in place."""
    from visionllama_mm.backbones import VisionLLaMA
    backbone = cfg.model.backbone
    arch = dict(VisionLLaMA.arch_zoo[backbone.arch])
    arch['num_layers'] = REDUCED_LAYERS
    backbone.arch = arch

    if len(backbone.get('out_indices', [])) > 1:  # UperNet taps 4 blocks
        backbone.out_indices = list(range(REDUCED_LAYERS))
    if 'window_block_indexes' in backbone:
        backbone.window_block_indexes = [0, 1, 2]  # block 3 is global
    paramwise = cfg.optim_wrapper.get('paramwise_cfg') or {}
    if 'num_layers' in paramwise:
        paramwise['num_layers'] = REDUCED_LAYERS


def seg_batch(size, num_classes, batch_size=2):
    """Two images: UPerHead's 1x1 pooling branch has BN in training mode."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    samples = []
    for _ in range(batch_size):
        sample = SegDataSample(
            metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, h, w)))
        samples.append(sample)
    return dict(
        inputs=[
            torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
            for _ in range(batch_size)
        ],
        data_samples=samples)


def det_batch(size, num_classes):
    from mmdet.testing import demo_mm_inputs
    batch = demo_mm_inputs(
        batch_size=1,
        image_shapes=[(3, ) + tuple(size)],
        num_items=[3],
        num_classes=max(num_classes, 2),  # it draws labels in [1, n)
        with_mask=True)
    for sample in batch['data_samples']:
        sample.gt_instances.labels %= num_classes
    return batch


def test_found_configs():
    names = {osp.basename(p) for p in CONFIGS}
    assert len(names) == len(CONFIGS)  # unique basenames (mim)
    for folder in FOLDERS:
        assert any(f'/{folder}/' in p for p in CONFIGS), folder


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_forwards(path):
    cfg = Config.fromfile(path)
    if any(s in osp.basename(path) for s in REDUCED_DEPTH):
        reduce_depth(cfg)
    assert cfg.model.backbone.type.startswith('visionllama_mm.')
    scope = cfg.default_scope
    assert scope in ('mmseg', 'mmdet')
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    if scope == 'mmseg':
        size = (64, 64)
        model_cfg.data_preprocessor.size = size
        num_classes = model_cfg.decode_head.num_classes
    else:
        size = (128, 128)
        for aug in model_cfg.data_preprocessor.get('batch_augments') or []:
            aug['size'] = size
        num_classes = model_cfg.roi_head.bbox_head.num_classes
    if scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.train()
    batch = (
        seg_batch(size, num_classes) if scope == 'mmseg' else det_batch(
            size, num_classes))
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=True)
        losses = model(**data, mode='loss')
    assert losses
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(torch.as_tensor(v)).all(), name

    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if 'LayerDecay' in str(optim_cfg.get('constructor', '')):
        optim_cfg.type = 'OptimWrapper'  # AMP needs a GPU
        optim_cfg.pop('loss_scale', None)
        wrapper = build_optim_wrapper(model, optim_cfg)
        rate = optim_cfg.paramwise_cfg.get(
            'layer_decay_rate', optim_cfg.paramwise_cfg.get('decay_rate'))
        lr = optim_cfg.optimizer.lr
        lr_of = {
            id(p): g['lr']
            for g in wrapper.optimizer.param_groups
            for p in g['params']
        }
        for name, param in model.named_parameters():
            depth, num = model.backbone.get_layer_depth(name, 'backbone.')
            assert num == model.backbone.num_layers + 2
            assert lr_of[id(param)] == pytest.approx(
                lr * rate**(num - 1 - depth)), name


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if '/quickstart/' in p and 'rcnn' in p],
    ids=osp.basename)
def test_det_roi_features_match_torchvision(path):
    """The RoI heads see the FPN features at the RoI positions.

    mmcv's ``RoIAlign`` reads NCHW memory whatever the strides, so a
    channels-last feature map (a backbone returning a permuted view, which
    the FPN convs propagate) silently scrambles the RoI features; the
    extractor must agree with torchvision's stride-aware ``roi_align``.
    """
    from torchvision.ops import roi_align
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(2, 3, 128, 160))
        extractor = model.roi_head.bbox_roi_extractor
        # boxes small enough to map to the finest level (stride 4)
        rois = torch.tensor([[0, 8., 12., 40., 50.], [1, 60., 30., 110., 90.],
                             [1, 0., 0., 24., 24.]])
        assert (extractor.map_roi_levels(rois,
                                         extractor.num_inputs) == 0).all()
        ours = extractor(feats[:extractor.num_inputs], rois)
        ref = roi_align(feats[0], rois, (7, 7), 0.25, 0, aligned=True)
    for feat in feats:
        assert feat.is_contiguous()
    torch.testing.assert_close(ours, ref)

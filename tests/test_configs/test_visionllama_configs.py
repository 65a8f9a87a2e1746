"""Every config under configs/visionllama builds its model and runs.

The shipped architecture is built (width, depth, heads, SwiGLU width, head,
neck, losses, batch augments, data pipelines, optimizer constructors); only
the input is reduced to 32 px, and the two 24-block L backbones (310M and
914M parameters) keep 4 of their blocks (building all of them takes minutes
and gigabytes on a 2-core CPU; their parameter counts are checked in
tests/test_backbones/test_param_counts.py).
"""
import glob
import os.path as osp
from copy import deepcopy

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from visionllama_mm.registry import MODELS as OUR_MODELS  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'visionllama', '*.py')))
MAX_LAYERS = 12  # backbones deeper than this keep REDUCED_LAYERS blocks
REDUCED_LAYERS = 4


def reduce(cfg, num_layers=None):
    """Shipped model at 32 px input, no pretrained checkpoint.

    Args:
        num_layers (int, optional): Blocks to keep; defaults to the shipped
            depth, or ``REDUCED_LAYERS`` when that exceeds ``MAX_LAYERS``.
    """
    model = deepcopy(cfg.model)
    # as mmengine's Runner does
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model.pop('init_cfg', None)
    bb = model.backbone
    bb.pop('init_cfg', None)
    bb.img_size = 32
    cls = OUR_MODELS.get(bb.type.split('.')[-1])
    arch = dict(cls.arch_zoo[bb.arch])
    if num_layers is None and arch['num_layers'] > MAX_LAYERS:
        num_layers = REDUCED_LAYERS
    if num_layers is not None:
        arch['num_layers'] = num_layers
        bb.arch = arch
        if bb.get('frozen_stages', -1) > 0:
            bb.frozen_stages = num_layers
    return model


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_runs(path):
    from mmpretrain.registry import MODELS, TRANSFORMS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type.startswith('visionllama_mm.')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(reduce(cfg))
        model.init_weights()
        x = torch.randn(2, 3, 32, 32)
        model.eval()
        with torch.no_grad():
            logits = model(x, mode='tensor')
        assert logits.shape == (2, 1000)
        assert torch.isfinite(logits).all()
        # one training loss through the data preprocessor (batch augments
        # such as Mixup / CutMix live there) and the head's loss
        model.train()
        batch = dict(
            inputs=[
                torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
                for _ in range(2)
            ],
            data_samples=[DataSample().set_gt_label(i) for i in (3, 7)])
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(loss)
        loss.backward()
        # the data pipelines of the recipe build
        for t in (cfg.train_dataloader.dataset.pipeline +
                  cfg.test_dataloader.dataset.pipeline):
            TRANSFORMS.build(t)


DECAY_TEST_LAYERS = 2  # the shipped width, 2 blocks: every lr is spelled out


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if 'lrd45' in p], ids=osp.basename)
def test_layer_decay_optimizer(path):
    """lr of block i = base_lr * 0.45 ** (L - i), stem 0.45 ** (L + 1)."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        from mmpretrain.registry import MODELS
        model = MODELS.build(reduce(cfg, num_layers=DECAY_TEST_LAYERS))
        optim_cfg = deepcopy(cfg.optim_wrapper)
        optim_cfg.type = 'OptimWrapper'  # AMP needs a GPU
        optim_cfg.pop('loss_scale', None)
        wrapper = build_optim_wrapper(model, optim_cfg)
    base_lr = cfg.optim_wrapper.optimizer.lr
    L = DECAY_TEST_LAYERS
    lrs = {g['param_name']: g['lr'] for g in wrapper.optimizer.param_groups}
    assert lrs['backbone.patch_embed.projection.weight'] == pytest.approx(
        base_lr * 0.45**(L + 1))
    assert lrs['backbone.layers.0.attn.qkv.weight'] == pytest.approx(base_lr *
                                                                     0.45**L)
    assert lrs['backbone.layers.1.ffn.w3.weight'] == pytest.approx(base_lr *
                                                                   0.45)
    assert lrs['head.fc.weight'] == pytest.approx(base_lr)
    wd = {
        g['param_name']: g['weight_decay']
        for g in wrapper.optimizer.param_groups
    }
    assert wd['backbone.layers.0.ln1.weight'] == 0
    assert wd['backbone.layers.0.attn.qkv.bias'] == 0
    assert wd['backbone.layers.0.attn.qkv.weight'] == 0.05

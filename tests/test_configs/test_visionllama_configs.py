"""Every config under configs/visionllama builds its model and runs.

The architecture is reduced to a tiny custom arch and the input to 32 px;
everything else (heads, necks, losses, batch augments, data pipelines,
optimizer constructors) is the shipped config.
"""
import glob
import os.path as osp
from copy import deepcopy

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'visionllama', '*.py')))
TINY = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def reduce(cfg):
    """Tiny model, no pretrained checkpoint."""
    model = deepcopy(cfg.model)
    # as mmengine's Runner does
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model.pop('init_cfg', None)
    bb = model.backbone
    bb.pop('init_cfg', None)
    bb.arch = dict(TINY)
    bb.img_size = 32
    if bb.get('frozen_stages', -1) > 0:
        bb.frozen_stages = TINY['num_layers']
    if model.get('neck') and 'input_features' in model.neck:
        model.neck.input_features = TINY['embed_dims']
    model.head.in_channels = TINY['embed_dims']
    return model


def test_configs_found():
    assert len(CONFIGS) == 11


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_runs(path):
    from mmpretrain.registry import MODELS, TRANSFORMS
    from mmpretrain.structures import DataSample
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports == ['visionllama_mm']
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


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if 'lrd45' in p], ids=osp.basename)
def test_layer_decay_optimizer(path):
    """lr of block i = base_lr * 0.45 ** (L - i), stem 0.45 ** (L + 1)."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        from mmpretrain.registry import MODELS
        model = MODELS.build(reduce(cfg))
        wrapper = build_optim_wrapper(model, deepcopy(cfg.optim_wrapper))
    base_lr = cfg.optim_wrapper.optimizer.lr
    L = TINY['num_layers']
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

"""Every shipped generation config builds and runs a loss step."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from visionllama_mm.generation.models import build_generator
from visionllama_mm.registry import MODELS

pytest.importorskip('mmagic')

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'dit_llama', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'sit_llama', '*.py')))


@pytest.mark.parametrize(
    'path', [c for c in CONFIGS if c.endswith('-latents.py')],
    ids=osp.basename)
def test_cached_latent_configs(path):
    """Same recipe as the image config, data = extracted moments, not
    normalised (training itself is tested in test_latents.py)."""
    cfg = Config.fromfile(path)
    images = Config.fromfile(path.replace('-latents.py', '.py'))
    assert cfg.model.cached_latents and 'cached_latents' not in images.model
    assert cfg.model.data_preprocessor == dict(type='ImgDataPreprocessor')
    assert cfg.train_dataloader.dataset.type == 'visionllama_mm.CachedLatents'
    for key in ('arch', 'vae', 'net_cfg', 'sample_cfg'):
        assert cfg.model[key] == images.model[key]
    assert cfg.optim_wrapper == images.optim_wrapper
    assert cfg.train_cfg == images.train_cfg
    init_default_scope(cfg.default_scope)
    MODELS.build(cfg.model.data_preprocessor)


@pytest.mark.parametrize(
    'path', [c for c in CONFIGS if not c.endswith('-latents.py')],
    ids=osp.basename)
def test_config_builds_and_trains_one_step(path):
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model
    if isinstance(model_cfg.arch, str):  # the official recipes
        # (their values: tests/test_configs/test_official_recipes.py)
        if cfg.get('strategy') is not None:
            # FSDP: the EMA on the parameter shards, same decay
            assert cfg.strategy.type == 'visionllama_mm.FSDPStrategy'
            (ema, ) = cfg.custom_hooks
            assert ema.type == 'visionllama_mm.FSDPEMAHook'
            assert ema.momentum == 1e-4
        with torch.device('meta'):  # full size, no memory
            net = build_generator(model_cfg.arch, **model_cfg.net_cfg)
        assert net.input_size == 32 and net.cfg_channels == 3
        assert net.num_classes == 1000 and net.learn_sigma
        # reduced size, same face and objective, pixel space for the test
        small = dict(
            model_cfg,
            vae=None,
            arch=dict(
                input_size=8,
                patch_size=net.patch_size,
                hidden_size=32,
                depth=1,
                num_heads=2,
                num_classes=10),
            net_cfg=dict(in_channels=3))
        model = MODELS.build(small)
        shape, classes = (3, 8, 8), 10
    else:
        model = MODELS.build(model_cfg)
        shape, classes = (1, 28, 28), 10
    from mmagic.datasets.transforms import PackInputs
    pack = PackInputs(keys=['img'], data_keys=['gt_label'])
    items = [
        pack(
            dict(
                img=np.random.randint(
                    0, 256, shape[1:] + shape[:1], dtype=np.uint8),
                gt_label=label)) for label in (1, classes - 1)
    ]
    batch = dict(
        inputs=[it['inputs'] for it in items],
        data_samples=[it['data_samples'] for it in items])
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])

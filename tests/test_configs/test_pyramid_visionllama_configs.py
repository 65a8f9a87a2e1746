"""Every shipped Pyramid VisionLLaMA config builds and runs one forward."""
import glob
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'pyramid_visionllama', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_forwards(path):
    pytest.importorskip('mmpretrain.models')
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(path)
    import_modules_from_strings(**cfg.custom_imports)
    # the recipe values: tests/test_configs/test_official_recipes.py
    model = MODELS.build(cfg.model).eval()  # built with the official init
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()

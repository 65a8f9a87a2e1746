"""Helpers shared by the MAE tests: config loading and tiny reductions."""
import copy
from pathlib import Path

from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / 'configs' / 'mae_visionllama'
# the ImageNet fine-tune / linear-probe configs (plain-backbone task)
CLS_CONFIG_DIR = ROOT / 'configs' / 'visionllama'

TINY_DIM = 32


def tiny_arch(num_layers: int = 2) -> dict:
    return dict(embed_dims=TINY_DIM, num_layers=num_layers, num_heads=2)


def load(name: str) -> Config:
    """Load a config of configs/mae_visionllama (or configs/visionllama)."""
    path = CONFIG_DIR / name
    if not path.is_file():
        path = CLS_CONFIG_DIR / name
    return Config.fromfile(str(path))


def reduce_pretrain(model: dict,
                    img: int = 32,
                    patch: int = 8,
                    num_layers: int = 2) -> dict:
    """An MAE model config at a tiny size (same types and structure)."""
    model = copy.deepcopy(model)
    model['backbone'].update(
        arch=tiny_arch(num_layers), img_size=img, patch_size=patch)
    model['neck'].update(
        num_patches=(img // patch)**2,
        patch_size=patch,
        embed_dim=TINY_DIM,
        decoder_embed_dim=TINY_DIM,
        decoder_depth=1,
        decoder_num_heads=2)
    model['head'].update(patch_size=patch)
    return model


def reduce_classifier(model: dict,
                      checkpoint=None,
                      img: int = 32,
                      patch: int = 8,
                      num_layers: int = 2,
                      num_classes: int = 10) -> dict:
    """A fine-tune / linear-probe model config at a tiny size."""
    model = copy.deepcopy(model)
    backbone = model['backbone']
    backbone.update(arch=tiny_arch(num_layers), img_size=img, patch_size=patch)
    if backbone.get('frozen_stages', -1) > 0:
        backbone['frozen_stages'] = num_layers
    if checkpoint is None:
        backbone.pop('init_cfg', None)
    else:
        backbone['init_cfg']['checkpoint'] = str(checkpoint)
    if model.get('neck') is not None:
        model['neck']['input_features'] = TINY_DIM
    model['head'].update(in_channels=TINY_DIM, num_classes=num_classes)
    return model

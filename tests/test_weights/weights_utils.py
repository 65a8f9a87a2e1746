"""Official-format files for the weight-loading tests, made as the official
code saves them (seeded random values, reduced depth).

* MAE ``epoch_*.pth``: an mmengine runner checkpoint of the MAE model
  (``meta``, ``state_dict`` with the never-added ``backbone.pos_embed``,
  ``message_hub`` with a ``HistoryBuffer``, optimizer state).
* Pyramid ``best_checkpoint.pth`` and plain deit-style files:
  ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'scaler', 'args'}``
  (``args`` an ``argparse.Namespace``), keys of the official code
  (``tests/test_backbones/pyramid_reference.py`` for the pyramid).
* DiT / SiT ``.pt``: ``{'model', 'ema', 'opt', 'args'}``
  (``tests/test_generation/gen_reference.py``).
* LLaMA-Adapter V2 releases: ``{'model', 'config'}`` with official names.
"""
import argparse
import copy
import glob
import os.path as osp
import re
import sys

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for sub in ('test_backbones', 'test_generation', 'test_multimodal'):
    path = osp.join(ROOT, 'tests', sub)
    if path not in sys.path:
        sys.path.insert(0, path)

# Blocks kept per plain VisionLLaMA (widths, heads and FFN as shipped).
PLAIN_LAYERS = 2
# Blocks per pyramid stage (two: one LSA and one GSA block).
PYRAMID_DEPTHS = [2, 2, 2, 2]


def shipped_configs():
    """Every config under configs/ (no _base_), relative to the root."""
    paths = glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
    return sorted(osp.relpath(p, ROOT) for p in paths if '/_base_/' not in p)


# A config loads weights if it (or a local base) names a Pretrained
# init_cfg, points an inherited one at a file, or sets load_from. The
# bases of the libraries (``mmseg::`` ...) are not read: their own
# backbones' init_cfgs are replaced by ours (the dense config tests build
# every model).
_LOADS_WEIGHTS = re.compile(r"Pretrained|init_cfg=dict\(checkpoint=|"
                            r"load_from\s*=\s*['\"]")


def _config_text(path: str) -> str:
    """A config's text and that of its local bases."""
    with open(path) as f:
        text = f.read()
    match = re.search(r'_base_\s*=\s*(\[[^\]]*\]|[\'"][^\'"]*[\'"])', text,
                      re.S)
    if match:
        for base in re.findall(r'[\'"]([^\'"]+)[\'"]', match.group(1)):
            if '::' not in base:
                text += _config_text(osp.join(osp.dirname(path), base))
    return text


def loads_weights(rel: str) -> bool:
    """Whether a shipped config (path relative to the root) loads weights,
    from its text (parsing every config would take minutes)."""
    return bool(_LOADS_WEIGHTS.search(_config_text(osp.join(ROOT, rel))))


def _pretrained_init_cfgs(obj, where='model'):
    """(location, init_cfg) of every Pretrained init_cfg in a model dict."""
    found = []
    if isinstance(obj, dict):
        init = obj.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        for item in inits:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                found.append((where, item))
        for key, value in obj.items():
            if key != 'init_cfg':
                found += _pretrained_init_cfgs(value, f'{where}.{key}')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found += _pretrained_init_cfgs(value, f'{where}[{i}]')
    return found


def weight_sources(cfg: Config) -> list:
    """How a config loads weights: ``('init_cfg', location, init_cfg)``
    and / or ``('load_from', path)``."""
    out = [('init_cfg', where, init)
           for where, init in _pretrained_init_cfgs(cfg.get('model'))]
    if cfg.get('load_from'):
        out.append(('load_from', cfg.load_from))
    return out


def randomize(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            out[k] = torch.randn(
                v.shape, generator=g) * 0.05 + (1. if k.endswith('norm.weight')
                                                else 0.)
        else:
            out[k] = v.clone()
    return out


def mae_epoch_checkpoint(model: torch.nn.Module, seed: int = 0) -> dict:
    """An MAE ``epoch_800.pth`` for ``model`` (an mmpretrain MAE)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    state = randomize(model.state_dict(), seed)
    n = model.backbone.patch_resolution[0] * model.backbone.patch_resolution[
        1] if hasattr(model.backbone, 'patch_resolution') else 196
    dims = model.backbone.embed_dims
    # the official encoder keeps a (never added) position embedding
    state['backbone.pos_embed'] = torch.zeros(1, n + 1, dims)
    lr = HistoryBuffer()
    lr.update(1.5e-4)
    return {
        'meta': {
            'epoch': 800,
            'iter': 250200,
            'mmengine_version': '0.8.4',
            'dataset_meta': {}
        },
        'state_dict': state,
        'message_hub': {
            'log_scalars': {
                'train/lr': lr
            },
            'runtime_info': {
                'epoch': 800,
                'max_iters': np.int64(250200)
            },
        },
        'optimizer': {
            'state': {},
            'param_groups': [{
                'lr': 1.5e-4,
                'params': []
            }]
        },
    }


def deit_container(state: dict, model_name: str) -> dict:
    """The deit training script's ``best_checkpoint.pth``."""
    return {
        'model': state,
        'optimizer': {
            'state': {},
            'param_groups': [{
                'lr': 1e-5
            }]
        },
        'lr_scheduler': {
            'base_values': [1e-3]
        },
        'epoch': 299,
        'scaler': {
            'scale': 65536.0
        },
        'args': argparse.Namespace(model=model_name, drop_path=0.1),
    }


def pyramid_official(arch: str, num_classes: int = 1000, seed: int = 0):
    """``best_checkpoint.pth`` of Pyramid VisionLLaMA ``arch`` at
    :data:`PYRAMID_DEPTHS`."""
    import pyramid_reference as ref

    from visionllama_mm.backbones import PyramidVisionLLaMA
    spec = dict(PyramidVisionLLaMA.arch_zoo[arch], depths=PYRAMID_DEPTHS)
    state = ref.official_arch_state_dict(
        spec['embed_dims'],
        spec['depths'],
        spec['sr_ratios'],
        num_classes=num_classes,
        seed=seed)
    return deit_container(state, f'pllama_wols_{arch}_patch16'), spec


def plain_deit_official(backbone_cfg: dict,
                        num_classes: int,
                        seed: int = 0) -> dict:
    """A deit-style plain file (``vit_llama_rope_*``): the official names
    are :class:`VisionLLaMADeiT`'s, so its state dict gives the keys."""
    from visionllama_mm.backbones import VisionLLaMADeiT
    cfg = {
        k: v
        for k, v in backbone_cfg.items()
        if k not in ('type', 'init_cfg', 'out_type', 'drop_path_rate')
    }
    net = VisionLLaMADeiT(num_classes=num_classes, **cfg)
    state = randomize(net.state_dict(), seed)
    state['pos_embed'] = torch.zeros(1, 1, 1)  # unused official entry
    return deit_container(state, 'vit_llama_rope_base_patch16')


def reduce_plain_backbone(backbone) -> None:
    """Plain VisionLLaMA at :data:`PLAIN_LAYERS` blocks, in place."""
    from visionllama_mm.backbones import VisionLLaMA
    arch = backbone.get('arch', 'base')
    spec = dict(VisionLLaMA.arch_zoo[arch]) if isinstance(arch, str) else \
        dict(arch)
    spec['num_layers'] = PLAIN_LAYERS
    backbone['arch'] = spec
    taps = len(backbone.get('out_indices', []))
    if taps > 1:  # UperNet taps four blocks
        backbone['out_indices'] = [
            min(i, PLAIN_LAYERS - 1) for i in range(taps)
        ]
    if 'window_block_indexes' in backbone:
        backbone['window_block_indexes'] = [0]  # the last block is global
    if backbone.get('frozen_stages', 0) > PLAIN_LAYERS:
        backbone['frozen_stages'] = PLAIN_LAYERS


def build(cfg: Config, model_cfg=None):
    """Build ``model_cfg`` (default: the config's model) in its scope."""
    from mmengine.registry import MODELS, DefaultScope, init_default_scope
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(copy.deepcopy(model_cfg or cfg.model))
    return model.eval()


def module_at(model, location: str):
    """The sub-module an init_cfg location (``model.backbone``) names."""
    module = model
    for part in location.split('.')[1:]:
        module = getattr(module, part)
    return module


def assert_loaded(module, expected: dict, new_by_design=()) -> None:
    """Every tensor of ``module`` equals ``expected`` (its own key names),
    except the declared new-by-design ones; lists every offender."""
    import fnmatch
    wrong, absent = [], []
    for key, value in module.state_dict().items():
        if 'num_batches_tracked' in key:
            continue
        if any(fnmatch.fnmatchcase(key, p) for p in new_by_design):
            continue
        if key not in expected:
            absent.append(key)
        elif not torch.equal(value.float(), expected[key].float()):
            wrong.append(key)
    assert not absent and not wrong, (
        f'not loaded from the file: {absent[:10]}; different values: '
        f'{wrong[:10]}')

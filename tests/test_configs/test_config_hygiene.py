"""Every shipped config loads, and no ``_delete_`` marker survives merging.

mmengine only consumes ``_delete_`` where a base defines the same key; a
marker left over would reach a constructor as an unexpected argument (e.g.
``IterBasedTrainLoop(_delete_=True)``) only when the config is trained.
"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))


def leftover_delete_keys(node, path=''):
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == '_delete_':
                found.append(path or '<root>')
            found += leftover_delete_keys(value, f'{path}.{key}'.lstrip('.'))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += leftover_delete_keys(value, f'{path}[{i}]')
    return found


@pytest.mark.parametrize(
    'config', CONFIGS, ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_has_no_leftover_delete(config):
    cfg = Config.fromfile(config)
    assert not leftover_delete_keys(
        cfg.to_dict()), (f'{config}: `_delete_` has no base key to replace at '
                         f'{leftover_delete_keys(cfg.to_dict())}')

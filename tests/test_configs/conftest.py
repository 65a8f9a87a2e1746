"""Fixtures of the config tests: every shipped config, resolved once."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_dump_tool():
    """``tools/misc/dump_resolved_configs.py`` as a module."""
    path = osp.join(ROOT, 'tools', 'misc', 'dump_resolved_configs.py')
    spec = importlib.util.spec_from_file_location('dump_resolved_configs',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def dump_tool():
    return load_dump_tool()


@pytest.fixture(scope='session')
def resolved_configs(dump_tool):
    """``{config path: resolved text}`` of every shipped config."""
    return dump_tool.dump_all(ROOT)

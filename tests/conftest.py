"""Suite-wide fixtures."""
import pytest


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """Run every test with no mmengine default scope, as in a new process.

    mmengine keeps the latest ``DefaultScope`` in a class-level dict, so a
    scope set by one test (or a module fixture) would otherwise decide which
    registry a later test builds from.
    """
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)

"""Suite-wide fixtures."""
import pytest


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Keep a test's mmengine default scope from leaking into the next."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)

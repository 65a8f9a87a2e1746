"""Suite-wide fixtures."""
import pytest

from visionllama_mm.compat import register_safe_loading

# The suite runs as a registered process, like tools/train.py: which test
# happens to load a config first (its custom_imports register too) must not
# decide how the others load checkpoints. What triggers the registration
# (tools, configs, the package import) is tested in fresh subprocesses
# (tests/test_foundation/test_package_imports.py).
register_safe_loading()


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

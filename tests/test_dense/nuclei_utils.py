"""Helpers of the dense tests (the nuclei data-preparation tool)."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'dataset_converters', 'prepare_nuclei.py')


def load_prepare_nuclei():
    """Import tools/dataset_converters/prepare_nuclei.py as a module."""
    spec = importlib.util.spec_from_file_location('prepare_nuclei', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

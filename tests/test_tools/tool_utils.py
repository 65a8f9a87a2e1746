"""Shared helpers of the tools/ tests."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(relpath: str):
    """Import a script under the repository root (e.g. tools/...) as a module.

    The module is named after the file and not put in ``sys.modules``, so
    every call executes the script afresh.
    """
    path = osp.join(ROOT, relpath)
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

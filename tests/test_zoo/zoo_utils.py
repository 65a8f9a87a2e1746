"""Shared helpers of the model-zoo tests."""
import importlib.util
import os.path as osp
import shutil

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = osp.join(osp.dirname(osp.abspath(__file__)), 'data')
INDEX = osp.join(ROOT, 'model-index.yml')


def load_tool(relpath: str):
    """Import a script under tools/ as a module."""
    path = osp.join(ROOT, relpath)
    name = 'zoo_tool_' + osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_fixture(tmp_path) -> str:
    """A writable copy of the fixture repository; returns its index path."""
    dst = tmp_path / 'repo'
    shutil.copytree(DATA, dst)
    return str(dst / 'model-index.yml')


# The fixture's models (tests/test_zoo/data/configs/toy), counted by hand
# from mmpretrain's VisionTransformer: embed 32, 2 layers, 2 heads, FFN 64,
# patch 8, class token, VisionTransformerClsHead.
def toy_vit_counts(img: int, classes: int):
    """(parameters, multiply-accumulates) of the fixture ViT."""
    c, ffn, patch, layers = 32, 64, 8, 2
    n_patch = (img // patch)**2
    n = n_patch + 1
    params = (
        3 * patch * patch * c + c  # patch embed
        + c  # cls token
        + n * c  # pos_embed
        + layers * (
            2 * 2 * c  # ln1, ln2
            + c * 3 * c + 3 * c  # qkv
            + c * c + c  # proj
            + c * ffn + ffn + ffn * c + c)  # ffn
        + 2 * c  # final norm
        + c * classes + classes)  # head
    macs = (
        n_patch * c * 3 * patch * patch  # patch embed conv
        + layers * (
            n * c * 3 * c  # qkv
            + 2 * n * n * c  # q @ k^T and attn @ v
            + n * c * c  # proj
            + 2 * n * c * ffn)  # ffn
        + c * classes)  # head on the class token
    return params, macs

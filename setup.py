"""Packaging for visionllama_mm (metadata lives in setup.cfg).

Like mmpretrain's setup.py, configs/, tools/ and model-index.yml are linked
(editable installs) or copied (sdist / wheel) into ``visionllama_mm/.mim`` so
that ``mim train visionllama_mm <config>`` finds them.
"""
import os
import os.path as osp
import shutil
import sys
from setuptools import setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension():
    """Link or copy the mim resources into ``visionllama_mm/.mim``."""
    if 'develop' in sys.argv or any('editable' in a for a in sys.argv):
        mode = 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        return
    here = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(here, 'visionllama_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(here, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, osp.dirname(dst)), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup()

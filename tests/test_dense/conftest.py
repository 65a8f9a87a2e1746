"""Shared fixtures of the dense tests: the real nuclei data, prepared once."""
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from nuclei_utils import load_prepare_nuclei  # noqa: E402


@pytest.fixture(scope='session')
def stardist_wheel():
    """Path of the cached stardist wheel; skips when it cannot be fetched."""
    pn = load_prepare_nuclei()
    try:
        return pn.fetch_stardist_wheel()
    except pn.FetchError as err:
        pytest.skip('the stardist wheel (real nuclei data) could not be '
                    f'downloaded with pip (network / PyPI unavailable?): '
                    f'{err}')


@pytest.fixture(scope='session')
def nuclei_root(stardist_wheel, tmp_path_factory):
    """A directory holding ``data/nuclei`` (run commands with it as cwd)."""
    pn = load_prepare_nuclei()
    root = tmp_path_factory.mktemp('nuclei_workdir')
    pn.prepare(out=str(root / 'data' / 'nuclei'), wheel=stardist_wheel)
    return root

"""Helpers of the foundation tests: repo paths and tool subprocesses."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TEST_DATA = osp.join(REPO_ROOT, 'tests', 'data')
TOY_CONFIG = osp.join(TEST_DATA, 'configs', 'toy_classification.py')
TOY_INTERRUPTED_CONFIG = osp.join(TEST_DATA, 'configs',
                                  'toy_classification_interrupted.py')

# The toy task module (tests/data/visionllama_mm_toy.py) for in-process use.
if TEST_DATA not in sys.path:
    sys.path.insert(0, TEST_DATA)


def subprocess_env(**extra):
    """Environment for tool subprocesses: this checkout and the toy module
    first on PYTHONPATH, one thread (deterministic and light on CI)."""
    env = dict(os.environ)
    paths = [REPO_ROOT, TEST_DATA]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.setdefault('OMP_NUM_THREADS', '1')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    env.update(extra)
    return env


def run_tool(args, check=True, timeout=600, **env):
    """Run ``python <args>`` from the repo root; return the CompletedProcess.

    On an unexpected exit status the test fails with the output's tail.
    """
    proc = subprocess.run(
        [sys.executable] + list(args),
        cwd=REPO_ROOT,
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode}:\n'
                    f'{proc.stdout[-6000:]}')
    return proc


def free_port():
    """A TCP port that is free now (for torchrun's rendezvous)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]

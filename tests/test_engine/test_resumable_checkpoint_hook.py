"""ResumableCheckpointHook: crash-safe saving and resume fallback.

The crash tests SIGKILL a real ``tools/train.py`` at chosen file-system
steps of a checkpoint save (tests/data/kill_point_train.py pauses the
process there) and check that ``--resume`` continues from the newest
complete checkpoint and ends with the weights of an uninterrupted run.
"""
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from visionllama_mm.engine.hooks import (ATOMIC_BACKEND, AtomicLocalBackend,
                                         ResumableCheckpointHook, atomic_write,
                                         checkpoint_defect)

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
DATA = osp.join(REPO, 'tests', 'data')
SAFE_TOY = osp.join(DATA, 'configs', 'toy_classification_safe.py')
KILL_DRIVER = osp.join(DATA, 'kill_point_train.py')
TRAIN = osp.join(REPO, 'tools', 'train.py')


def _env(**extra):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO, DATA] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('OMP_NUM_THREADS', '1')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    env.update(extra)
    return env


def _train(work_dir, *extra, check=True):
    proc = subprocess.run(
        [sys.executable, TRAIN, SAFE_TOY, '--work-dir', work_dir, *extra],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-5000:]
    return proc


def _kill_at(work_dir, point, tmp_path):
    """Start a run, SIGKILL it when it pauses at ``point``."""
    marker = str(tmp_path / f'paused-{point.replace(":", "-")}')
    proc = subprocess.Popen(
        [sys.executable, KILL_DRIVER, SAFE_TOY, '--work-dir', work_dir],
        cwd=REPO,
        env=_env(KILL_POINT=point, KILL_MARKER=marker),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True)
    deadline = time.monotonic() + 300
    while not osp.exists(marker):
        if proc.poll() is not None:
            pytest.fail(f'the run ended before pausing at {point}:\n'
                        f'{proc.stdout.read()[-5000:]}')
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f'the run never paused at {point}')
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with open(marker) as f:
        return f.read()


def _weights(path):
    return torch.load(
        path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('uninterrupted'))
    _train(work_dir)
    names = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    assert names == ['epoch_4.pth'], names  # max_keep_ckpts=1
    return _weights(osp.join(work_dir, 'epoch_4.pth'))


# os call -> what the pause interrupts (4 epochs, a checkpoint each; every
# save is: fsync temp file, fsync folder, replace, then the same for
# last_checkpoint, then remove the previous checkpoint).
KILL_POINTS = {
    # epoch 2's checkpoint written to its temp file, not yet flushed
    'fsync:5': 'inside the save of epoch 2 (temp file, before fsync)',
    # epoch 2's file complete, not yet renamed into place
    'replace:3': 'before epoch 2 is moved into place',
    # epoch 2 in place, last_checkpoint still names epoch 1
    'replace:4': 'before last_checkpoint names epoch 2',
    # epoch 2 and last_checkpoint done, epoch 1 not yet removed
    'remove:1': 'before the previous checkpoint is removed',
}
FAST_POINTS = ['fsync:5']


@pytest.mark.parametrize('point', [
    pytest.param(p, marks=() if p in FAST_POINTS else pytest.mark.slow)
    for p in KILL_POINTS
])
def test_sigkill_then_resume_matches_uninterrupted(uninterrupted, point,
                                                   tmp_path):
    work_dir = str(tmp_path / 'run')
    _kill_at(work_dir, point, tmp_path)
    ckpts = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth'))
    # whatever was interrupted, a complete checkpoint is there and
    # last_checkpoint names one
    assert ckpts and all(
        checkpoint_defect(osp.join(work_dir, n)) is None for n in ckpts)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        pointed = f.read().strip()
    assert checkpoint_defect(pointed) is None
    proc = _train(work_dir, '--resume')
    # the newest complete checkpoint: epoch 2 once it is in place
    epoch = 1 if point in ('fsync:5', 'replace:3') else 2
    assert f'resumed epoch: {epoch}, iter: {6 * epoch}' in proc.stdout
    # nothing partial or stale is left behind
    names = sorted(os.listdir(work_dir))
    assert [n for n in names if n.endswith('.pth')] == ['epoch_4.pth']
    assert not [n for n in names if '.partial-' in n]
    final = _weights(osp.join(work_dir, 'epoch_4.pth'))
    assert final.keys() == uninterrupted.keys()
    for key in final:
        assert torch.equal(final[key], uninterrupted[key]), key


@pytest.mark.slow
def test_resume_falls_back_from_truncated_checkpoint(uninterrupted, tmp_path):
    """A truncated newest file (e.g. copied by another tool) is named and
    the previous complete checkpoint is used, by path and by auto resume."""
    work_dir = str(tmp_path / 'run')
    _kill_at(work_dir, 'remove:1', tmp_path)  # epoch_1 and epoch_2 exist
    newest = osp.join(work_dir, 'epoch_2.pth')
    with open(newest, 'rb') as f:
        data = f.read()
    with open(newest, 'wb') as f:
        f.write(data[:len(data) // 2])
    by_path = str(tmp_path / 'by_path')
    shutil.copytree(work_dir, by_path)
    runs = {
        by_path: (['--resume',
                   osp.join(by_path,
                            'epoch_2.pth')], 'Cannot resume from checkpoint '
                  f'{osp.join(by_path, "epoch_2.pth")}: the file is '
                  'truncated'),
        work_dir:
        (['--resume'], f'Skipping checkpoint {newest}: the file is truncated'),
    }
    for folder, (args, message) in runs.items():
        proc = _train(folder, *args)
        assert message in proc.stdout
        assert 'resumed epoch: 1, iter: 6' in proc.stdout
        final = _weights(osp.join(folder, 'epoch_4.pth'))
        for key in final:
            assert torch.equal(final[key], uninterrupted[key]), key


def test_truncated_checkpoint_without_fallback_is_named(tmp_path):
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    bad = work_dir / 'epoch_3.pth'
    torch.save({'x': torch.zeros(1000)}, str(bad))
    bad.write_bytes(bad.read_bytes()[:300])
    proc = _train(str(work_dir), '--resume', str(bad), check=False)
    assert proc.returncode != 0
    assert f'Cannot resume from checkpoint {bad}' in proc.stdout
    assert 'holds no earlier complete checkpoint' in proc.stdout


class TestAtomicWrite:

    def test_complete_or_absent(self, tmp_path, monkeypatch):
        path = str(tmp_path / 'ckpt.pth')
        atomic_write(b'old', path)

        def fail(*args):
            raise OSError('disk full')

        monkeypatch.setattr(os, 'replace', fail)
        with pytest.raises(OSError, match='disk full'):
            atomic_write(b'new content', path)
        with open(path, 'rb') as f:
            assert f.read() == b'old'
        assert os.listdir(tmp_path) == ['ckpt.pth']  # temp file removed

    def test_backend_is_registered(self, tmp_path):
        from mmengine.fileio import get_file_backend
        backend = get_file_backend(
            str(tmp_path), backend_args=dict(backend=ATOMIC_BACKEND))
        assert isinstance(backend, AtomicLocalBackend)
        backend.put(b'abc', str(tmp_path / 'sub' / 'f.bin'))
        backend.put_text('name', str(tmp_path / 'last_checkpoint'))
        assert (tmp_path / 'sub' / 'f.bin').read_bytes() == b'abc'
        assert (tmp_path / 'last_checkpoint').read_text() == 'name'

    def test_checkpoint_defect(self, tmp_path):
        good = str(tmp_path / 'good.pth')
        torch.save({'w': torch.ones(100)}, good)
        assert checkpoint_defect(good) is None
        truncated = tmp_path / 'truncated.pth'
        truncated.write_bytes(open(good, 'rb').read()[:-30])
        assert 'truncated' in checkpoint_defect(str(truncated))
        empty = tmp_path / 'empty.pth'
        empty.write_bytes(b'')
        assert checkpoint_defect(str(empty)) == 'the file is empty'
        assert checkpoint_defect(str(tmp_path / 'no.pth')) == \
            'the file does not exist'


def test_hook_is_registered_in_scope():
    from mmengine.registry import HOOKS
    hook = HOOKS.build(
        dict(type='visionllama_mm.ResumableCheckpointHook', interval=2))
    assert isinstance(hook, ResumableCheckpointHook)
    assert hook.interval == 2

"""Safe checkpoint loading (visionllama_mm.compat) on torch >= 2.6."""
import argparse
import builtins
import io
import os
import os.path as osp
import pickle
import subprocess

import numpy as np
import pytest
import torch
from foundation_utils import TOY_CONFIG
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from visionllama_mm.compat import (CHECKPOINT_SAFE_GLOBALS,
                                   CheckpointLoadError, UnsafeCheckpointError,
                                   checkpoint_safe_globals,
                                   load_checkpoint_safe, load_from_local,
                                   register_safe_loading)


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious file does."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    """Ways a pickle can run code, each creating ``marker`` when run."""
    return {
        'os.system': _Payload(os.system, f'touch {marker}'),
        'builtins.exec': _Payload(builtins.exec,
                                  f'open({marker!r}, "w").close()'),
        'builtins.open': _Payload(builtins.open, marker, 'w'),
        'subprocess.run': _Payload(subprocess.run, ['touch', marker]),
    }


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """A real mmengine runner checkpoint (toy task, one epoch)."""
    work_dir = tmp_path_factory.mktemp('runner')
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 10
    Runner.from_cfg(cfg).train()
    return str(work_dir / 'epoch_1.pth')


@pytest.fixture()
def deit_checkpoint(tmp_path):
    """A deit / DiT style file: weights plus an ``argparse.Namespace``."""
    path = str(tmp_path / 'deit.pth')
    args = argparse.Namespace(
        model='deit_tiny_patch16_224',
        lr=5e-4,
        input_size=224,
        drop=0.0,
        mean=(0.485, 0.456, 0.406),
        resume='',
        smoothing=None)
    torch.save({'model': {'w': torch.ones(2, 2)}, 'args': args}, path)
    return path


class TestAllowList:

    def test_runner_checkpoint_needs_exactly_the_allow_list(
            self, runner_checkpoint):
        # What torch refuses by default, read statically (nothing runs).
        registered = torch.serialization.get_safe_globals()
        torch.serialization.clear_safe_globals()
        try:
            needed = set(
                torch.serialization.get_unsafe_globals_in_checkpoint(
                    runner_checkpoint))
            with torch.serialization.safe_globals(checkpoint_safe_globals()):
                left = torch.serialization.get_unsafe_globals_in_checkpoint(
                    runner_checkpoint)
        finally:
            torch.serialization.add_safe_globals(registered)
        assert needed == {
            'mmengine.logging.history_buffer.HistoryBuffer',
            'numpy.core.multiarray._reconstruct',
            'numpy.core.multiarray.scalar', 'numpy.ndarray', 'numpy.dtype',
            'builtins.getattr'
        }
        assert left == []

    def test_documented_names(self):
        assert 'mmengine.logging.history_buffer.HistoryBuffer' in \
            CHECKPOINT_SAFE_GLOBALS
        assert 'argparse.Namespace' in CHECKPOINT_SAFE_GLOBALS
        names = {
            g[1]
            if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
            for g in checkpoint_safe_globals()
        }
        assert {
            'numpy.core.multiarray._reconstruct',
            'numpy._core.multiarray._reconstruct', 'numpy.ndarray',
            'numpy.dtype', 'argparse.Namespace', 'builtins.getattr',
            'mmengine.logging.history_buffer.HistoryBuffer'
        } <= names
        # nothing that can run programs or touch files
        assert not any(
            n.startswith(('os.', 'posix.', 'subprocess.')) for n in names)
        assert not names & {'builtins.exec', 'builtins.eval', 'builtins.open'}


class TestLoadCheckpointSafe:

    def test_runner_checkpoint(self, runner_checkpoint):
        ckpt = load_checkpoint_safe(runner_checkpoint)
        assert set(ckpt) >= {'meta', 'state_dict', 'message_hub', 'optimizer'}
        buffer = ckpt['message_hub']['log_scalars']['train/loss']
        assert isinstance(buffer, HistoryBuffer)
        assert buffer.data[0].dtype == np.float64 and len(buffer.data[0]) > 0
        # the restricted getattr restored the statistics methods
        assert np.isfinite(buffer.mean())
        assert ckpt['meta']['epoch'] == 1

    def test_deit_style_namespace(self, deit_checkpoint):
        ckpt = load_checkpoint_safe(deit_checkpoint)
        assert isinstance(ckpt['args'], argparse.Namespace)
        assert ckpt['args'].model == 'deit_tiny_patch16_224'
        assert ckpt['args'].mean == (0.485, 0.456, 0.406)
        torch.testing.assert_close(ckpt['model']['w'], torch.ones(2, 2))

    @pytest.mark.parametrize('dtype', [
        np.float16, np.float32, np.float64, np.int8, np.int32, np.int64,
        np.uint8, np.bool_
    ])
    def test_numpy_arrays_and_scalars(self, tmp_path, dtype):
        path = str(tmp_path / 'np.pth')
        array = np.arange(6).reshape(2, 3).astype(dtype)
        torch.save({'a': array, 's': array.reshape(-1)[1]}, path)
        ckpt = load_checkpoint_safe(path)
        np.testing.assert_array_equal(ckpt['a'], array)
        assert ckpt['a'].dtype == array.dtype
        assert ckpt['s'] == array.reshape(-1)[1]

    def test_file_object_and_map_location(self, deit_checkpoint):
        with open(deit_checkpoint, 'rb') as f:
            ckpt = load_checkpoint_safe(f, map_location='meta')
        assert ckpt['model']['w'].device.type == 'meta'
        buffer = io.BytesIO(open(deit_checkpoint, 'rb').read())
        assert load_checkpoint_safe(buffer)['args'].lr == 5e-4

    def test_allow_list_is_scoped(self, deit_checkpoint):
        before = set(torch.serialization.get_safe_globals())
        load_checkpoint_safe(deit_checkpoint)
        assert set(torch.serialization.get_safe_globals()) == before

    @pytest.mark.parametrize(
        'name',
        ['os.system', 'builtins.exec', 'builtins.open', 'subprocess.run'])
    @pytest.mark.parametrize('zip_format', [True, False])
    def test_refuses_code_and_runs_nothing(self, tmp_path, name, zip_format):
        marker = str(tmp_path / 'marker')
        path = str(tmp_path / 'evil.pth')
        torch.save(
            {
                'state_dict': {
                    'w': torch.zeros(1)
                },
                'meta': _payloads(marker)[name]
            },
            path,
            _use_new_zipfile_serialization=zip_format)
        with pytest.raises(UnsafeCheckpointError) as info:
            load_checkpoint_safe(path)
        message = str(info.value)
        assert 'evil.pth' in message
        assert 'trusted=True' in message
        assert info.value.offending, message
        assert name.split('.')[1] in ' '.join(info.value.offending)
        assert not osp.exists(marker)

    def test_trusted_runs_the_pickle(self, tmp_path):
        # Shows the payload above is live: only trusted=True executes it.
        marker = str(tmp_path / 'marker')
        path = str(tmp_path / 'evil.pth')
        torch.save({'x': _payloads(marker)['builtins.exec']}, path)
        with pytest.raises(UnsafeCheckpointError):
            load_checkpoint_safe(path)
        assert not osp.exists(marker)
        load_checkpoint_safe(path, trusted=True)
        assert osp.exists(marker)

    def test_restricted_getattr(self, tmp_path):
        path = str(tmp_path / 'attr.pth')
        torch.save({'m': _Payload(getattr, HistoryBuffer, '__init__')}, path)
        with pytest.raises(UnsafeCheckpointError, match='getattr'):
            load_checkpoint_safe(path)
        torch.save({'m': _Payload(getattr, HistoryBuffer, 'mean')}, path)
        assert load_checkpoint_safe(path)['m'] is HistoryBuffer.mean

    def test_corrupt_and_truncated(self, tmp_path, runner_checkpoint):
        data = open(runner_checkpoint, 'rb').read()
        truncated = tmp_path / 'truncated.pth'
        truncated.write_bytes(data[:len(data) // 2])
        with pytest.raises(CheckpointLoadError, match='truncated.pth'):
            load_checkpoint_safe(str(truncated))
        garbage = tmp_path / 'garbage.pth'
        garbage.write_bytes(b'not a checkpoint' * 8)
        with pytest.raises(CheckpointLoadError, match='corrupt'):
            load_checkpoint_safe(str(garbage))
        legacy = str(tmp_path / 'legacy.pth')
        torch.save({'w': torch.arange(100.)},
                   legacy,
                   _use_new_zipfile_serialization=False)
        data = open(legacy, 'rb').read()
        cut = tmp_path / 'legacy_cut.pth'
        for size in (10, len(data) // 3, len(data) - 10):
            cut.write_bytes(data[:size])
            with pytest.raises(CheckpointLoadError) as info:
                load_checkpoint_safe(str(cut))
            assert not isinstance(info.value, UnsafeCheckpointError)
        with pytest.raises(CheckpointLoadError, match='not found'):
            load_checkpoint_safe(str(tmp_path / 'missing.pth'))


class TestMMEngineLoading:

    def test_default_torch_load_accepts_runner_checkpoints(
            self, runner_checkpoint):
        # what mmengine's URL and other loaders do: weights_only default
        ckpt = torch.load(runner_checkpoint)
        assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'],
                          HistoryBuffer)

    def test_local_loader_is_safe(self):
        loader = CheckpointLoader._get_checkpoint_loader('/some/file.pth')
        # visionllama_mm.weights wraps it with the layout conversion
        assert loader.__wrapped__.__module__ == 'visionllama_mm.compat'

    def test_load_checkpoint(self, runner_checkpoint):
        from visionllama_mm_toy import ToyClassifier
        model = ToyClassifier()
        ckpt = load_checkpoint(model, runner_checkpoint)
        torch.testing.assert_close(model.state_dict()['net.0.weight'],
                                   ckpt['state_dict']['net.0.weight'])

    def test_refuses_code(self, tmp_path):
        marker = str(tmp_path / 'marker')
        path = str(tmp_path / 'evil.pth')
        torch.save({'state_dict': _payloads(marker)['os.system']}, path)
        with pytest.raises(UnsafeCheckpointError) as info:
            _load_checkpoint(path)
        assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' in str(info.value)
        assert not osp.exists(marker)

    def test_torch_switch_trusts(self, tmp_path, monkeypatch):
        # torch's own switch is the explicit way to trust mmengine loads.
        marker = str(tmp_path / 'marker')
        path = str(tmp_path / 'trusted.pth')
        torch.save({'x': _payloads(marker)['builtins.open']}, path)
        monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
        _load_checkpoint(path)
        assert osp.exists(marker)

    def test_registration_is_idempotent(self):
        # tests/conftest.py registered already, as the tools do
        import mmengine.runner.checkpoint as checkpoint

        from visionllama_mm.weights import install_official_loading
        before = dict(CheckpointLoader._schemes)
        safe = set(torch.serialization.get_safe_globals())
        register_safe_loading()
        install_official_loading(checkpoint, load_from_local)
        assert dict(CheckpointLoader._schemes) == before
        assert set(torch.serialization.get_safe_globals()) == safe


def test_unpickling_error_is_not_swallowed(tmp_path):
    # a plain pickle (not a torch file) is reported, not loaded
    path = tmp_path / 'plain.pkl'
    path.write_bytes(pickle.dumps({'a': 1}))
    with pytest.raises(CheckpointLoadError):
        load_checkpoint_safe(str(path))

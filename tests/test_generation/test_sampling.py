"""Distributed, resumable sampling (tools/sample.py on gloo, CPU)."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from visionllama_mm.generation.sampling import (merge_shards, sample_generator,
                                                sample_indices, sample_labels,
                                                sample_shards)

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
CFG = osp.join(ROOT, 'configs', 'dit_llama',
               'dit-llama-tiny_1xb32-3k_mnist5k-28.py')
ENV = dict(
    os.environ,
    OMP_NUM_THREADS='1',
    PYTHON=sys.executable,
    PORT=str(29500 + os.getpid() % 1000),
    PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Random (non-zero) weights of the tiny MNIST DiT, saved once."""
    pytest.importorskip('mmagic')
    from mmengine.config import Config

    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.registry import MODELS
    cfg = Config.fromfile(CFG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    for p in model.net.parameters():
        p.data.normal_(0, 0.02)
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def sample_cmd(ckpt, out_dir, nproc=1, *extra):
    args = [
        CFG, ckpt, '--out-dir',
        str(out_dir), '--device', 'cpu', '--num-steps', '3'
    ] + list(extra)
    if nproc == 1:
        return [sys.executable, osp.join(ROOT, 'tools', 'sample.py')] + args
    # tools/dist_sample.sh (torchrun, --launcher pytorch; gloo on CPU)
    return ['bash', osp.join(ROOT, 'tools', 'dist_sample.sh')
            ] + args[:2] + [str(nproc)] + args[2:]


def test_per_sample_streams():
    g1, g2 = sample_generator(0, 5), sample_generator(0, 5)
    assert torch.equal(
        torch.randn(4, generator=g1), torch.randn(4, generator=g2))
    assert not torch.equal(
        torch.randn(4, generator=sample_generator(0, 6)),
        torch.randn(4, generator=sample_generator(1, 5)))
    with pytest.raises(ValueError, match='seed and index'):
        sample_generator(-1, 0)
    gens = [sample_generator(3, i) for i in range(200)]
    drawn = sample_labels(gens, range(200), 10)
    assert drawn.min() >= 0 and drawn.max() < 10 and len(set(
        drawn.tolist())) == 10
    fixed = sample_labels([sample_generator(3, i) for i in range(5)],
                          range(5),
                          10,
                          labels=[7, 8])
    assert fixed.tolist() == [7, 8, 7, 8, 7]


def fake_sample_fn(labels, generators):
    """Images from the per-sample streams (no network)."""
    from visionllama_mm.generation.diffusion import randn
    x = randn((len(labels), 3, 2, 2), list(generators))
    return ((x.tanh() + 1) * 127.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_shards_are_independent_of_batch_and_shard_size(tmp_path):
    a = sample_shards(
        fake_sample_fn,
        7,
        str(tmp_path / 'a'),
        10,
        seed=1,
        shard_size=3,
        batch_size=2,
        log=lambda m: None)
    b = sample_shards(
        fake_sample_fn,
        7,
        str(tmp_path / 'b'),
        10,
        seed=1,
        shard_size=7,
        batch_size=5,
        log=lambda m: None)
    a, b = np.load(a), np.load(b)
    assert a['arr_0'].shape == (7, 2, 2, 3) and a['arr_0'].dtype == np.uint8
    np.testing.assert_array_equal(a['arr_0'], b['arr_0'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
    imgs, labels = sample_indices(fake_sample_fn, [4, 5], 1, 10)
    np.testing.assert_array_equal(imgs, a['arr_0'][4:6])
    with pytest.raises(ValueError, match='shard_size'):
        sample_shards(fake_sample_fn, 7, str(tmp_path / 'c'), 10, shard_size=0)
    # a missing shard is resampled; the others are reused untouched
    shard_dir = next((tmp_path / 'a').glob('shards_*'))
    os.remove(shard_dir / 'shard_000001.npz')
    before = os.stat(shard_dir / 'shard_000000.npz').st_mtime_ns
    logs = []
    again = sample_shards(
        fake_sample_fn,
        7,
        str(tmp_path / 'a'),
        10,
        seed=1,
        shard_size=3,
        batch_size=2,
        log=logs.append)
    np.testing.assert_array_equal(np.load(again)['arr_0'], a['arr_0'])
    assert os.stat(shard_dir / 'shard_000000.npz').st_mtime_ns == before
    assert '2 done, 1 to go' in logs[0]
    assert any('ETA' in m for m in logs)
    with pytest.raises(RuntimeError, match='expected 8'):
        merge_shards(str(shard_dir), 8, 3, str(tmp_path / 'x.npz'))
    # another job in the same folder gets its own shards, never mixed
    other = np.load(
        sample_shards(
            fake_sample_fn,
            7,
            str(tmp_path / 'a'),
            10,
            seed=2,
            shard_size=3,
            log=lambda m: None))['arr_0']
    assert not np.array_equal(other, a['arr_0'])
    assert len(list((tmp_path / 'a').glob('shards_*'))) == 2


def expected_samples(ckpt, n, **kwargs):
    """What tools/sample.py must write, computed here in-process."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.generation.sampling import to_uint8_nhwc
    from visionllama_mm.registry import MODELS
    cfg = Config.fromfile(CFG)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(ckpt)['state_dict'])
    kwargs = dict(model.sample_cfg, **kwargs)

    def fn(labels, generators):
        return to_uint8_nhwc(
            model.sample(labels, generator=generators, **kwargs))

    return sample_indices(fn, range(n), 0, 10, batch_size=5)


def test_one_and_two_processes_write_identical_images(tmp_path, checkpoint):
    """torchrun, gloo: 2 processes with shards of 2 write what one process
    computes in batches of 5 (sample i depends on (seed, i) only)."""
    subprocess.run(
        sample_cmd(checkpoint, tmp_path / 'two', 2, '--num-samples', '6',
                   '--shard-size', '2', '--batch-size', '2', '--cfg-scale',
                   '2'),
        check=True,
        env=ENV)
    two = np.load(tmp_path / 'two' / 'samples_6.npz')
    images, labels = expected_samples(checkpoint, 6, num_steps=3, cfg_scale=2.)
    assert two['arr_0'].shape == (6, 28, 28, 3)
    np.testing.assert_array_equal(two['arr_0'], images)
    np.testing.assert_array_equal(two['labels'], labels)
    assert len(set(labels.tolist())) > 1  # random classes
    assert osp.isfile(tmp_path / 'two' / 'samples.png')
    # the FID tool reads the ADM layout
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
    try:
        from fid import load_images
    finally:
        sys.path.pop(0)
    np.testing.assert_array_equal(
        load_images(str(tmp_path / 'two' / 'samples_6.npz')), images)


@pytest.mark.slow
def test_killed_run_resumes_from_its_shards(tmp_path, checkpoint):
    """SIGKILL a run after its first shards; the restart keeps them (same
    files) and writes the same images as an uninterrupted run (two tool
    launches: slow; test_shards_are_independent_of_batch_and_shard_size
    checks the resume logic in the default suite)."""
    args = ('--num-samples', '16', '--shard-size', '1', '--batch-size', '1',
            '--num-steps', '30')
    out = tmp_path / 'killed'
    proc = subprocess.Popen(
        sample_cmd(checkpoint, out, 1, *args),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            done = list(out.glob('shards_*/shard_*.npz'))
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    shard_dir = next(out.glob('shards_*'))
    kept = {
        p.name: p.stat().st_mtime_ns
        for p in shard_dir.glob('shard_*.npz')
    }
    assert 2 <= len(kept) < 16, 'the run was not interrupted mid-way'
    assert not osp.isfile(out / 'samples_16.npz')
    res = subprocess.run(
        sample_cmd(checkpoint, out, 1, *args),
        env=ENV,
        check=True,
        capture_output=True,
        text=True)
    assert f'{len(kept)} done, {16 - len(kept)} to go' in res.stdout
    assert 'ETA' in res.stdout
    for name, mtime in kept.items():
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    images, _ = expected_samples(checkpoint, 16, num_steps=30)
    np.testing.assert_array_equal(
        np.load(out / 'samples_16.npz')['arr_0'], images)

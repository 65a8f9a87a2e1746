"""Exact resume on the quick-start config (random crop, a dataloader
worker): an interrupted and resumed run ends with bit-identical weights to
an uninterrupted one, resumed at an epoch boundary or in the middle of an
epoch, in one process and (slow) in two."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
DATA = osp.join(REPO, 'tests', 'data')
QUICK = osp.join(REPO, 'configs', 'quickstart',
                 'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')
if DATA not in sys.path:
    sys.path.insert(0, DATA)

# 2 epochs of 4 batches of 64 digits (a subset of the 4,000)
SUBSET, BATCH, EPOCHS = 256, 64, 2
ITERS_PER_EPOCH = SUBSET // BATCH


def _cfg(work_dir, checkpoint, stop=None):
    cfg = Config.fromfile(QUICK)
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.dataset.indices = SUBSET
    cfg.train_dataloader.batch_size = BATCH
    cfg.train_cfg.max_epochs = EPOCHS
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint.update(checkpoint, max_keep_ckpts=-1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    cfg.custom_imports.imports = list(
        cfg.custom_imports.imports) + ['resume_helpers']
    if stop is not None:
        cfg.custom_hooks = [dict(type='ResumeTestStopHook', **stop)]
    return cfg


def _train(cfg, resume_from=None):
    from mmengine.runner import Runner
    from resume_helpers import Interrupted
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = None if resume_from == 'auto' else resume_from
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    except Interrupted:
        return None
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert all(torch.equal(a[k], b[k]) for k in a), diffs


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """Weights after an uninterrupted run."""
    work_dir = tmp_path_factory.mktemp('straight')
    return _train(_cfg(work_dir, dict(by_epoch=True, interval=1)))


@pytest.mark.slow
def test_resume_at_epoch_boundary(straight, tmp_path):
    checkpoint = dict(by_epoch=True, interval=1)
    assert _train(_cfg(tmp_path, checkpoint, dict(at_epoch=1))) is None
    assert osp.isfile(tmp_path / 'epoch_1.pth')
    resumed = _train(_cfg(tmp_path, checkpoint), resume_from='auto')
    _assert_identical(resumed, straight)


def test_resume_in_the_middle_of_an_epoch(straight, tmp_path):
    checkpoint = dict(by_epoch=False, interval=3)
    stop_at = 2 * 3  # iteration 6: 2 batches into epoch 2
    assert _train(_cfg(tmp_path, checkpoint, dict(at_iter=stop_at))) is None
    ckpt = str(tmp_path / f'iter_{stop_at}.pth')
    meta = torch.load(ckpt, map_location='cpu', weights_only=False)['meta']
    assert (meta['epoch'], meta['iter']) == (1, stop_at)
    resumed = _train(_cfg(tmp_path, checkpoint), resume_from=ckpt)
    _assert_identical(resumed, straight)


def test_augmentation_differs_between_epochs():
    """The seeded crops are a function of (seed, epoch, sample): a new
    epoch gets new crops (what the resumed run used to replay)."""
    from mmengine.registry import DATA_SAMPLERS, DATASETS, init_default_scope
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(QUICK)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    sampler = DATA_SAMPLERS.build(
        dict(type='visionllama_mm.ResumableSampler', shuffle=False, seed=0),
        default_args=dict(dataset=dataset))

    def crops(epoch):
        sampler.set_epoch(epoch)
        return [dataset[i]['inputs'] for _, i in zip(range(8), sampler)]

    first, again, second = crops(0), crops(0), crops(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


def _dist_train(work_dir, *extra):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO, DATA] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('OMP_NUM_THREADS', '1')
    env.update(PYTHON=sys.executable, PORT=str(_free_port()))
    proc = subprocess.run([
        'bash', 'tools/dist_train.sh',
        str(work_dir / 'cfg.py'), '2', '--work-dir',
        str(work_dir), *extra
    ],
                          cwd=REPO,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _write_cfg(work_dir, checkpoint, stop=None):
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = _cfg(work_dir, checkpoint,
               None if stop is None else dict(stop, mode='exit'))
    cfg.train_dataloader.batch_size = BATCH // 2  # same global batch
    cfg.dump(str(work_dir / 'cfg.py'))


@pytest.mark.slow
def test_two_process_resume_matches_uninterrupted(tmp_path):
    """torchrun with 2 CPU processes (gloo): uninterrupted vs stopped at an
    epoch boundary and in the middle of an epoch, then resumed."""
    checkpoints = {
        'epoch': (dict(by_epoch=True, interval=1), dict(at_epoch=1)),
        'iter': (dict(by_epoch=False, interval=3), dict(at_iter=6)),
    }
    straight_dir = tmp_path / 'straight'
    _write_cfg(straight_dir, dict(by_epoch=True, interval=1))
    _dist_train(straight_dir)
    final = f'epoch_{EPOCHS}.pth'
    expected = torch.load(
        straight_dir / final, map_location='cpu',
        weights_only=False)['state_dict']
    for name, (checkpoint, stop) in checkpoints.items():
        work_dir = tmp_path / name
        _write_cfg(work_dir, checkpoint, stop)
        _dist_train(work_dir)
        _write_cfg(work_dir, checkpoint)
        _dist_train(work_dir, '--resume')
        last = final if name == 'epoch' else \
            f'iter_{EPOCHS * ITERS_PER_EPOCH}.pth'
        got = torch.load(
            work_dir / last, map_location='cpu',
            weights_only=False)['state_dict']
        _assert_identical(got, expected)

"""tools/train.py, tools/test.py and tools/dist_*.sh on the toy task (CPU)."""
import glob
import importlib.util
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from foundation_utils import (REPO_ROOT, TOY_CONFIG, TOY_INTERRUPTED_CONFIG,
                              free_port, run_tool, subprocess_env)
from mmengine.config import Config

TRAIN = osp.join('tools', 'train.py')
TEST = osp.join('tools', 'test.py')


def _train_log(work_dir):
    """Per-iteration training records of every run in ``work_dir``, in
    order: {(epoch, iter): record}."""
    records = {}
    for path in sorted(
            glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    records[(rec['epoch'], rec['iter'])] = rec
    return records


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'_tool_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evil_checkpoint(path, marker):
    """A runner-like checkpoint whose pickle runs ``touch marker``."""

    class Payload:

        def __reduce__(self):
            return subprocess.call, (['touch', marker], )

    torch.save(
        {
            'meta': {
                'epoch': 2,
                'iter': 12
            },
            'state_dict': {},
            'message_hub': Payload()
        }, path)


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    """The uninterrupted 4-epoch run."""
    work_dir = str(tmp_path_factory.mktemp('full'))
    run_tool([TRAIN, TOY_CONFIG, '--work-dir', work_dir])
    return work_dir


def test_resume_matches_uninterrupted_run(full_run, tmp_path):
    work_dir = str(tmp_path / 'resumed')
    # the same config, stopped after epoch 2 as if the job were killed
    run_tool([TRAIN, TOY_INTERRUPTED_CONFIG, '--work-dir', work_dir])
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    assert not osp.exists(osp.join(work_dir, 'epoch_3.pth'))
    first = _train_log(work_dir)
    assert max(epoch for epoch, _ in first) == 2
    # --resume without a value: the latest checkpoint of the work dir
    proc = run_tool([TRAIN, TOY_CONFIG, '--work-dir', work_dir, '--resume'])
    assert 'resumed epoch: 2, iter: 12' in proc.stdout
    resumed = {k: v for k, v in _train_log(work_dir).items() if k[0] > 2}
    full = _train_log(full_run)
    expected = {k: v for k, v in full.items() if k[0] > 2}
    assert sorted(resumed) == sorted(expected)
    assert len(expected) == 2 * 6  # epochs 3-4, 24 samples / batch 4
    for key in expected:
        assert resumed[key]['loss'] == expected[key]['loss'], key
        assert resumed[key]['lr'] == expected[key]['lr'], key
    # and the first two epochs were the same run as well
    for key, rec in first.items():
        assert rec['loss'] == full[key]['loss'], key


def test_resume_from_path(full_run, tmp_path):
    work_dir = str(tmp_path / 'from_path')
    proc = run_tool([
        TRAIN, TOY_CONFIG, '--work-dir', work_dir, '--resume',
        osp.join(full_run, 'epoch_3.pth')
    ])
    assert 'resumed epoch: 3, iter: 18' in proc.stdout
    resumed = _train_log(work_dir)
    expected = {k: v for k, v in _train_log(full_run).items() if k[0] == 4}
    assert sorted(resumed) == sorted(expected)
    for key in expected:
        assert resumed[key]['loss'] == expected[key]['loss'], key


def test_resume_refuses_code(tmp_path):
    work_dir = tmp_path / 'evil'
    work_dir.mkdir()
    marker = str(tmp_path / 'marker')
    ckpt = str(work_dir / 'epoch_2.pth')
    _evil_checkpoint(ckpt, marker)
    (work_dir / 'last_checkpoint').write_text(ckpt)
    # auto resume: mmengine finds the file through last_checkpoint
    proc = run_tool(
        [TRAIN, TOY_CONFIG, '--work-dir',
         str(work_dir), '--resume'],
        check=False)
    assert proc.returncode != 0
    assert 'UnsafeCheckpointError' in proc.stdout
    assert f'Refusing to load checkpoint {ckpt}' in proc.stdout
    assert 'subprocess.call' in proc.stdout
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1' in proc.stdout
    assert not osp.exists(marker)


def test_test_tool_metrics_and_out(full_run, tmp_path):
    work_dir = str(tmp_path / 'test')
    out = str(tmp_path / 'preds.pkl')
    proc = run_tool([
        TEST, TOY_CONFIG,
        osp.join(full_run, 'epoch_4.pth'), '--work-dir', work_dir, '--out', out
    ])
    (metrics_file, ) = glob.glob(osp.join(work_dir, '*', 'metrics.json'))
    assert f'Metrics written to {metrics_file}' in proc.stdout
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert set(metrics) == {'toy/accuracy'}
    assert 0 <= metrics['toy/accuracy'] <= 100
    # mmengine's own json log of the test epoch agrees
    stamp = osp.basename(osp.dirname(metrics_file))
    with open(osp.join(work_dir, stamp, f'{stamp}.json')) as f:
        assert json.load(f)['toy/accuracy'] == metrics['toy/accuracy']
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 16 and set(preds[0]) == {'pred', 'label'}
    accuracy = 100.0 * sum(p['pred'] == p['label'] for p in preds) / 16
    assert accuracy == pytest.approx(metrics['toy/accuracy'])


def test_test_tool_refuses_code(tmp_path):
    marker = str(tmp_path / 'marker')
    ckpt = str(tmp_path / 'evil.pth')
    _evil_checkpoint(ckpt, marker)
    proc = run_tool(
        [TEST, TOY_CONFIG, ckpt, '--work-dir',
         str(tmp_path / 'w')],
        check=False)
    assert proc.returncode != 0
    assert f'Refusing to load checkpoint {ckpt}' in proc.stdout
    assert not osp.exists(marker)


def test_dist_train_and_test_two_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo), through the shell scripts."""
    work_dir = str(tmp_path / 'dist')
    env = subprocess_env(PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run([
        'bash', 'tools/dist_train.sh', TOY_CONFIG, '2', '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_epochs=2'
    ],
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'Distributed training: True' in proc.stdout
    # 24 samples, batch 4 per process, 2 processes: 3 iterations an epoch
    log = _train_log(work_dir)
    assert sorted(log) == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))

    env['PORT'] = str(free_port())
    proc = subprocess.run([
        'bash', 'tools/dist_test.sh', TOY_CONFIG,
        osp.join(work_dir, 'epoch_2.pth'), '2', '--work-dir',
        str(tmp_path / 'dist_test')
    ],
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    (metrics_file, ) = glob.glob(
        osp.join(str(tmp_path / 'dist_test'), '*', 'metrics.json'))
    with open(metrics_file) as f:
        assert 'toy/accuracy' in json.load(f)


class TestMergeArgs:
    """Command-line options -> config (no training)."""

    def setup_method(self):
        self.train = _load_tool('train')
        self.test = _load_tool('test')

    def test_train_defaults(self):
        args = self.train.parse_args([TOY_CONFIG])
        cfg = self.train.merge_args(Config.fromfile(TOY_CONFIG), args)
        assert cfg.work_dir == osp.join('./work_dirs', 'toy_classification')
        assert cfg.launcher == 'none'
        assert not cfg.get('resume', False)
        assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
        assert os.environ['LOCAL_RANK'] == '0'

    def test_train_options(self):
        args = self.train.parse_args([
            TOY_CONFIG, '--work-dir', 'wd', '--amp', '--resume', 'a.pth',
            '--launcher', 'pytorch', '--cfg-options', 'train_cfg.max_epochs=7',
            'model.hidden=5', '--no-validate'
        ])
        # on a GPU machine; the CPU choice is tested in test_cpu_runs_*.py
        self.train._has_amp_device = lambda: True
        cfg = self.train.merge_args(Config.fromfile(TOY_CONFIG), args)
        assert cfg.work_dir == 'wd'
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
        assert cfg.resume and cfg.load_from == 'a.pth'
        assert cfg.launcher == 'pytorch'
        assert cfg.train_cfg.max_epochs == 7 and cfg.model.hidden == 5
        assert cfg.val_cfg is None and cfg.val_dataloader is None

    def test_auto_resume(self):
        args = self.train.parse_args([TOY_CONFIG, '--resume'])
        cfg = self.train.merge_args(Config.fromfile(TOY_CONFIG), args)
        assert cfg.resume is True and cfg.load_from is None

    def test_amp_needs_plain_optim_wrapper(self):
        args = self.train.parse_args([TOY_CONFIG, '--amp'])
        cfg = Config.fromfile(TOY_CONFIG)
        cfg.optim_wrapper.type = 'ApexOptimWrapper'
        with pytest.raises(ValueError, match='--amp'):
            self.train.merge_args(cfg, args)

    def test_test_options(self):
        args = self.test.parse_args([
            TOY_CONFIG, 'ckpt.pth', '--work-dir', 'wd', '--cfg-options',
            'test_dataloader.batch_size=2'
        ])
        cfg = self.test.merge_args(Config.fromfile(TOY_CONFIG), args)
        assert cfg.load_from == 'ckpt.pth' and cfg.work_dir == 'wd'
        assert cfg.test_dataloader.batch_size == 2

    def test_out_must_be_pickle(self):
        with pytest.raises(SystemExit):
            self.test.parse_args([TOY_CONFIG, 'c.pth', '--out', 'x.json'])

    def test_show_dir_without_hook(self):
        args = self.test.parse_args([TOY_CONFIG, 'c.pth', '--show-dir', 'v'])
        with pytest.raises(ValueError, match='visualization'):
            self.test.merge_args(Config.fromfile(TOY_CONFIG), args)

    @pytest.mark.parametrize('scope,hook_type,out_key', [
        ('mmdet', 'DetVisualizationHook', 'test_out_dir'),
        ('mmpretrain', 'VisualizationHook', 'out_dir'),
        ('mmseg', 'SegVisualizationHook', None),
    ])
    def test_show_dir_routes_to_library_hook(self, scope, hook_type, out_key):
        cfg = Config.fromfile(TOY_CONFIG)
        cfg.default_scope = scope
        cfg.default_hooks.visualization = dict(type=hook_type)
        cfg.visualizer = dict(type='Visualizer')
        args = self.test.parse_args(
            [TOY_CONFIG, 'c.pth', '--show-dir', 'vis', '--interval', '3'])
        cfg = self.test.merge_args(cfg, args)
        hook = cfg.default_hooks.visualization
        # mmdet / mmseg switch drawing on with `draw`, mmpretrain `enable`
        switch = 'enable' if scope == 'mmpretrain' else 'draw'
        assert hook[switch] is True and hook.interval == 3
        if out_key is None:  # mmseg draws through the visualizer's backends
            assert cfg.visualizer.save_dir == 'vis'
        else:
            assert hook[out_key] == 'vis'

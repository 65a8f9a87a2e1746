"""DeepSpeed ZeRO through mmengine's FlexibleRunner (CPU, gloo, 2 processes).

deepspeed is optional (requirements/optional.txt): the 2-process tests skip
when it is not importable.
"""
import os.path as osp
import sys

import pytest
import torch

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(TESTS, 'test_foundation'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# isort: off
from foundation_utils import REPO_ROOT, TEST_DATA, run_tool  # noqa: E402
from test_fsdp import dist_train, global_losses  # noqa: E402
from test_fsdp import interrupted_run_resumes, state_dict  # noqa: E402
# isort: on

DS_TOY = osp.join(TEST_DATA, 'configs', 'toy_classification_deepspeed.py')
DS_INTERRUPTED = osp.join(TEST_DATA, 'configs',
                          'toy_classification_deepspeed_interrupted.py')
REF_TOY = osp.join(TEST_DATA, 'configs', 'toy_classification_global_loss.py')
STRATEGIES = osp.join(REPO_ROOT, 'configs', '_base_', 'strategies')


def test_deepspeed_snippets_and_cpu_wrapper():
    """The shipped snippets build mmengine's strategy config; on a CPU the
    optimizer wrapper becomes the no-grad-step one."""
    from mmengine.config import Config

    from visionllama_mm.compat import _cpu_deepspeed_optim_wrapper
    zero2 = Config.fromfile(osp.join(STRATEGIES, 'deepspeed_zero2.py'))
    assert zero2.runner_type == 'FlexibleRunner'
    assert zero2.strategy.type == 'DeepSpeedStrategy'
    assert zero2.strategy.zero_optimization.stage == 2
    assert zero2.strategy.config.zero_allow_untested_optimizer is True
    zero3 = Config.fromfile(osp.join(STRATEGIES, 'deepspeed_zero3.py'))
    assert zero3.strategy.zero_optimization == dict(
        stage=3, gather_16bit_weights_on_model_save=True)
    cfg = Config.fromfile(DS_TOY)
    assert cfg.optim_wrapper == dict(
        type='DeepSpeedOptimWrapper',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
    _cpu_deepspeed_optim_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'visionllama_mm.CPUDeepSpeedOptimWrapper'
    # other strategies keep their wrapper
    fsdp = Config(
        dict(
            strategy=dict(type='FSDPStrategy'),
            optim_wrapper=dict(type='DeepSpeedOptimWrapper')))
    _cpu_deepspeed_optim_wrapper(fsdp)
    assert fsdp.optim_wrapper.type == 'DeepSpeedOptimWrapper'
    pytest.importorskip('deepspeed')
    from mmengine.registry import STRATEGIES as MM_STRATEGIES
    strategy = MM_STRATEGIES.build(
        dict(cfg.strategy, train_micro_batch_size_per_gpu=2))
    assert strategy.config['zero_optimization']['stage'] == 2
    assert strategy.config['zero_allow_untested_optimizer'] is True


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
    """One process, batches of 4, 2 epochs (no DeepSpeed)."""
    work_dir = str(tmp_path_factory.mktemp('ref'))
    run_tool([
        'tools/train.py', REF_TOY, '--work-dir', work_dir, '--cfg-options',
        'train_cfg.max_epochs=2'
    ])
    return work_dir


@pytest.mark.slow
@pytest.mark.parametrize('stage', [1, 2, 3])
def test_deepspeed_zero_two_processes_equal_one_process(
        stage, reference_run, tmp_path):
    """ZeRO stage 1 / 2 / 3 with a torch SGD on 2 gloo processes: the same
    losses as one process on the same data, and the fp32 weights that
    DeepSpeed consolidates from the per-rank shards equal the one-process
    weights."""
    pytest.importorskip('deepspeed')
    from deepspeed.utils.zero_to_fp32 import \
        get_fp32_state_dict_from_zero_checkpoint
    work_dir = str(tmp_path / f'zero{stage}')
    out = dist_train(DS_TOY, work_dir, '--cfg-options',
                     'train_cfg.max_epochs=2',
                     f'strategy.zero_optimization.stage={stage}')
    assert 'DeepSpeedStrategy' in out
    ref = global_losses(reference_run)
    got = global_losses(work_dir)
    assert sorted(got) == sorted(ref) == list(range(1, 13))
    for i in ref:
        assert got[i] == pytest.approx(ref[i], rel=1e-5, abs=1e-6), i
    # a DeepSpeed checkpoint is a directory: model states and one
    # optimizer shard per rank
    assert osp.isdir(osp.join(work_dir, 'epoch_2.pth'))
    got_sd = get_fp32_state_dict_from_zero_checkpoint(
        work_dir, tag='epoch_2.pth')
    ref_sd = state_dict(osp.join(reference_run, 'epoch_2.pth'))
    assert sorted(got_sd) == sorted(ref_sd)
    for k in ref_sd:
        torch.testing.assert_close(got_sd[k], ref_sd[k], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_deepspeed_resume_matches_uninterrupted(tmp_path):
    """4 epochs under the shipped ZeRO-2 snippet = the same run stopped
    after epoch 2 (as if killed there, config unchanged) and resumed with
    --resume: the model, each rank's shard of the SGD momentum and the
    scheduler all continue, so the losses of epochs 3 and 4 and the final
    weights are those of the uninterrupted run."""
    pytest.importorskip('deepspeed')
    from deepspeed.utils.zero_to_fp32 import \
        get_fp32_state_dict_from_zero_checkpoint
    full, part, out = interrupted_run_resumes(DS_TOY, DS_INTERRUPTED, tmp_path)
    assert 'resumed epoch: 2, iter: 12' in out
    a = get_fp32_state_dict_from_zero_checkpoint(full, tag='epoch_4.pth')
    b = get_fp32_state_dict_from_zero_checkpoint(part, tag='epoch_4.pth')
    assert sorted(b) == sorted(a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['plain', 'mae'])
def test_model_families_train_under_deepspeed(family, tmp_path):
    """The tiny plain VisionLLaMA and MAE quick starts under the shipped
    ZeRO-2 snippet (2 gloo processes, torch AdamW sharded by ZeRO): they
    train, and the DeepSpeed checkpoint consolidates to the plain model's
    keys."""
    pytest.importorskip('deepspeed')
    from deepspeed.utils.zero_to_fp32 import \
        get_fp32_state_dict_from_zero_checkpoint
    from mmengine.config import Config
    from test_fsdp import QUICKSTART
    config, options = QUICKSTART[family]
    base = Config.fromfile(osp.join(REPO_ROOT, config))
    optimizer = dict(base.optim_wrapper.optimizer)
    path = tmp_path / f'zero2_{osp.basename(config)}'
    path.write_text(
        f'_base_ = [{osp.join(REPO_ROOT, config)!r}, '
        f'{osp.join(STRATEGIES, "deepspeed_zero2.py")!r}]\n'
        f'optim_wrapper = dict(_delete_=True, type="DeepSpeedOptimWrapper", '
        f'optimizer={optimizer!r})\n'
        'strategy = dict(train_micro_batch_size_per_gpu=8, '
        'zero_optimization=dict(reduce_bucket_size=1000000, '
        'allgather_bucket_size=1000000))\n')
    work_dir = str(tmp_path / 'work')
    out = dist_train(
        str(path), work_dir, '--no-validate', '--cfg-options', *options)
    assert 'DeepSpeedStrategy' in out
    sd = get_fp32_state_dict_from_zero_checkpoint(work_dir, tag='epoch_1.pth')
    assert set(_parameter_names(base)) <= set(sd)
    assert all(torch.isfinite(v).all() for v in sd.values())


def _parameter_names(cfg):
    """The parameter names of the model a config builds."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'visionllama_mm'))
    return [n for n, _ in MODELS.build(cfg.model).named_parameters()]

"""FSDP through mmengine's FlexibleRunner (CPU, gloo, 2 processes).

The quick test runs the toy task; the slow ones run tiny versions of the
package's models through the shipped strategy snippet.
"""
import glob
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from torch import nn

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(TESTS, 'test_foundation'))
# isort: off
from foundation_utils import REPO_ROOT, TEST_DATA, TOY_CONFIG  # noqa: E402
from foundation_utils import free_port, run_tool  # noqa: E402
from foundation_utils import subprocess_env  # noqa: E402
# isort: on

FSDP_TOY = osp.join(TEST_DATA, 'configs', 'toy_classification_fsdp.py')
FSDP_INTERRUPTED = osp.join(TEST_DATA, 'configs',
                            'toy_classification_fsdp_interrupted.py')
REF_TOY = osp.join(TEST_DATA, 'configs', 'toy_classification_global_loss.py')
FSDP_EMA = osp.join(TEST_DATA, 'configs', 'toy_classification_fsdp_ema.py')
FSDP_EMA_INTERRUPTED = osp.join(TEST_DATA, 'configs',
                                'toy_classification_fsdp_ema_interrupted.py')
REF_EMA = osp.join(TEST_DATA, 'configs', 'toy_classification_ema.py')
TRAIN = osp.join('tools', 'train.py')
TEST = osp.join('tools', 'test.py')


def dist_train(config, work_dir, *args, nproc=2, timeout=900):
    """tools/dist_train.sh on CPU; returns its output."""
    env = subprocess_env(PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run([
        'bash', 'tools/dist_train.sh', config,
        str(nproc), '--work-dir', work_dir, *args
    ],
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-8000:]
    return proc.stdout


def global_losses(work_dir):
    with open(osp.join(work_dir, 'global_loss.json')) as f:
        return {r['iter']: r['loss'] for r in map(json.loads, f)}


def state_dict(path):
    from visionllama_mm.compat import load_checkpoint_safe
    return load_checkpoint_safe(path)['state_dict']


def read_metrics(work_dir):
    (path, ) = glob.glob(osp.join(work_dir, '*', 'metrics.json'))
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------
# pieces (no process group)
# ----------------------------------------------------------------------
def test_wrap_policy_and_check_fn_pick_blocks():
    from visionllama_mm.backbones import VisionLLaMA
    from visionllama_mm.engine.fsdp import (block_classes, is_llama_block,
                                            llama_block_wrap_policy,
                                            unwrapped_name)
    from visionllama_mm.layers.blocks import VisionLLaMABlock
    from visionllama_mm.registry import FUNCTIONS
    model = VisionLLaMA(
        arch=dict(
            embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
        img_size=32,
        patch_size=16)
    wrapped = [
        m for m in model.modules() if llama_block_wrap_policy(m, False, 0)
    ]
    assert len(wrapped) == 2
    assert all(isinstance(m, VisionLLaMABlock) for m in wrapped)
    assert [is_llama_block(m) for m in model.modules()].count(True) == 2
    assert llama_block_wrap_policy(model, True, 0)  # always descend
    from visionllama_mm.backbones import PyramidVisionLLaMA
    from visionllama_mm.layers.blocks import LayerScaleBlock
    pyramid = PyramidVisionLLaMA(
        arch=dict(
            embed_dims=[16, 32, 48, 64],
            depths=[1, 2, 1, 1],
            num_heads=[1, 2, 3, 4],
            window_sizes=[7, 7, 7, 7],
            sr_ratios=[8, 4, 2, 1]))
    units = [
        m for m in pyramid.modules() if llama_block_wrap_policy(m, False, 0)
    ]
    assert len(units) == 5 and all(
        isinstance(m, LayerScaleBlock) for m in units)
    assert llama_block_wrap_policy(
        nn.Linear(2, 2), False, 0, block_types=['torch.nn.Linear'])
    with pytest.raises(ValueError, match='dotted class names'):
        block_classes(['Linear'])
    with pytest.raises(ValueError, match="no class 'Lineer'"):
        block_classes(['torch.nn.Lineer'])
    # the names mmengine's FSDP wrapper and strategy look up
    with FUNCTIONS.switch_scope_and_registry(None) as registry:
        assert registry.get('visionllama_mm.llama_block_wrap_policy') is \
            llama_block_wrap_policy
        assert registry.get('visionllama_mm.is_llama_block') is \
            is_llama_block
    assert unwrapped_name(
        'llama._fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module.'
        '_checkpoint_wrapped_module.mlp.up_proj.bias') == \
        'llama.model.layers.0.mlp.up_proj.bias'


def test_cpu_settings_of_strategies():
    from mmengine.config import Config

    from visionllama_mm.compat import _cpu_strategy
    cfg = Config.fromfile(FSDP_TOY)
    _cpu_strategy(cfg.strategy)
    wrapper = cfg.strategy.model_wrapper
    assert wrapper.device_id == 'cpu'
    # kept: visionllama_mm.FSDPStrategy broadcasts the states on CPU itself
    assert wrapper.sync_module_states is True
    assert wrapper.auto_wrap_policy.type == \
        'visionllama_mm.llama_block_wrap_policy'
    # the snippet's strategy: mmengine's, with optimizer-state loading for
    # torch >= 2.1 (found through the registry's location)
    from mmengine._strategy import FSDPStrategy as MMEngineFSDPStrategy
    from mmengine.registry import STRATEGIES
    strategy_cls = STRATEGIES.get(cfg.strategy.type)
    assert strategy_cls.__module__ == 'visionllama_mm.engine.strategies'
    assert issubclass(strategy_cls, MMEngineFSDPStrategy)
    # mmengine's own strategy cannot sync CPU modules: switched off
    mm = dict(type='FSDPStrategy', model_wrapper=dict(sync_module_states=True))
    _cpu_strategy(mm)
    assert mm['model_wrapper']['sync_module_states'] is False
    ddp = dict(type='DDPStrategy')
    _cpu_strategy(ddp)
    assert ddp['model_wrapper']['device_ids'] is None


def _broadcast_worker(rank, port, out_dir):
    import torch.distributed as dist

    from visionllama_mm.engine.strategies import broadcast_module_states
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    torch.manual_seed(rank)  # every rank initialises differently
    module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    module[1].running_mean.fill_(rank + 1.0)
    broadcast_module_states(module)
    torch.save(module.state_dict(), osp.join(out_dir, f'{rank}.pt'))
    dist.destroy_process_group()


def test_cpu_sync_module_states_copies_rank_0(tmp_path):
    """What FSDP's sync_module_states does on GPU, done by
    visionllama_mm.FSDPStrategy on CPU: parameters and buffers of rank 0 on
    every rank."""
    import torch.multiprocessing as mp
    mp.spawn(_broadcast_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).state_dict()
    ref['1.running_mean'].fill_(1.0)
    for rank in (0, 1):
        got = torch.load(osp.join(tmp_path, f'{rank}.pt'))
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)


# ----------------------------------------------------------------------
# 2 processes
# ----------------------------------------------------------------------
@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
    """One process, batches of 4, 2 epochs."""
    work_dir = str(tmp_path_factory.mktemp('ref'))
    run_tool([
        TRAIN, REF_TOY, '--work-dir', work_dir, '--cfg-options',
        'train_cfg.max_epochs=2'
    ])
    return work_dir


@pytest.fixture(scope='module')
def fsdp_run(tmp_path_factory):
    """2 processes under FSDP, batches of 2 each, 2 epochs."""
    work_dir = str(tmp_path_factory.mktemp('fsdp'))
    out = dist_train(FSDP_TOY, work_dir, '--cfg-options',
                     'train_cfg.max_epochs=2')
    return work_dir, out


def test_fsdp_two_processes_equal_one_process(reference_run, fsdp_run,
                                              tmp_path):
    """Same losses and weights as one process on the same data; the
    checkpoint is an ordinary one that tools/test.py loads into the plain
    model."""
    work_dir, out = fsdp_run
    assert 'FSDPStrategy' in out and 'Distributed training: True' in out
    ref = global_losses(reference_run)
    got = global_losses(work_dir)
    assert sorted(got) == sorted(ref) == list(range(1, 13))
    for i in ref:
        assert got[i] == pytest.approx(ref[i], rel=1e-5, abs=1e-6), i
    # the full state dict: the plain model's keys, same weights
    ref_sd = state_dict(osp.join(reference_run, 'epoch_2.pth'))
    got_sd = state_dict(osp.join(work_dir, 'epoch_2.pth'))
    assert sorted(got_sd) == sorted(ref_sd)
    for k in ref_sd:
        torch.testing.assert_close(got_sd[k], ref_sd[k], atol=1e-5, rtol=1e-5)
    # tools/test.py, one process, the plain toy config (no strategy)
    run_tool([
        TEST, TOY_CONFIG,
        osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
        str(tmp_path / 'test_fsdp')
    ])
    assert 0 <= read_metrics(str(tmp_path / 'test_fsdp'))['toy/accuracy'] \
        <= 100


def interrupted_run_resumes(config, interrupted, tmp_path):
    """Train ``config`` for 4 epochs (``full``), and ``interrupted`` (the
    same run stopped after epoch 2, as if killed there) then ``config`` with
    --resume in one work dir (``part``); the per-iteration losses must be
    equal. Returns both work dirs and the resumed run's output."""
    full = str(tmp_path / 'full')
    dist_train(config, full)
    part = str(tmp_path / 'part')
    dist_train(interrupted, part)
    assert sorted(global_losses(part)) == list(range(1, 13))
    assert not osp.exists(osp.join(part, 'epoch_3.pth'))
    out = dist_train(config, part, '--resume')
    want, got = global_losses(full), global_losses(part)
    assert sorted(got) == sorted(want) == list(range(1, 25))
    for i in want:
        assert got[i] == pytest.approx(want[i], rel=1e-5, abs=1e-6), i
    return full, part, out


@pytest.mark.slow
def test_fsdp_resume_matches_uninterrupted(tmp_path):
    """4 epochs under FSDP = the same run stopped after epoch 2 (as if
    killed there, config unchanged) and resumed with --resume: the model,
    the sharded SGD momentum (the full optimizer state of the checkpoint,
    re-sharded on load) and the scheduler all continue."""
    full, part, _ = interrupted_run_resumes(FSDP_TOY, FSDP_INTERRUPTED,
                                            tmp_path)
    a = state_dict(osp.join(full, 'epoch_4.pth'))
    b = state_dict(osp.join(part, 'epoch_4.pth'))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5)


def _assert_checkpoints_close(got, want, keys=('state_dict', )):
    from visionllama_mm.compat import load_checkpoint_safe
    got, want = load_checkpoint_safe(got), load_checkpoint_safe(want)
    for key in keys:
        assert sorted(got[key]) == sorted(want[key]), key
        for k in want[key]:
            torch.testing.assert_close(
                got[key][k], want[key][k], atol=1e-5, rtol=1e-5, msg=k)
    return got


def test_fsdp_ema_hook_refuses_what_it_cannot_average():
    from types import SimpleNamespace

    from visionllama_mm.engine.hooks import FSDPEMAHook
    with pytest.raises(ValueError, match='update_buffers must be False'):
        FSDPEMAHook(momentum=0.5, update_buffers=True)
    hook = FSDPEMAHook(momentum=0.5)
    with pytest.raises(TypeError, match='use EMAHook otherwise'):
        hook.before_run(SimpleNamespace(model=nn.Linear(2, 2)))


@pytest.mark.slow
def test_fsdp_ema_equals_one_process_ema(tmp_path):
    """FSDPEMAHook keeps the average on each rank's parameter shards; the
    checkpoint holds the full average in ``state_dict`` and the trained
    weights in ``ema_state_dict``, equal to mmengine's EMAHook in one
    process on the same data."""
    ref = str(tmp_path / 'ref')
    run_tool([
        TRAIN, REF_EMA, '--work-dir', ref, '--cfg-options',
        'train_cfg.max_epochs=2'
    ])
    work_dir = str(tmp_path / 'fsdp')
    out = dist_train(FSDP_EMA, work_dir, '--cfg-options',
                     'train_cfg.max_epochs=2')
    assert 'FSDPEMAHook' in out
    got = _assert_checkpoints_close(
        osp.join(work_dir, 'epoch_2.pth'),
        osp.join(ref, 'epoch_2.pth'),
        keys=('state_dict', 'ema_state_dict'))
    assert int(got['ema_state_dict']['steps']) == 12
    # the average is not the trained weights
    assert not torch.allclose(got['state_dict']['net.0.weight'],
                              got['ema_state_dict']['module.net.0.weight'])


@pytest.mark.slow
def test_fsdp_ema_resume_matches_uninterrupted(tmp_path):
    """Stopped after epoch 2 and resumed, the sharded EMA continues as in
    one uninterrupted run."""
    full = str(tmp_path / 'full')
    dist_train(FSDP_EMA, full)
    part = str(tmp_path / 'part')
    dist_train(FSDP_EMA_INTERRUPTED, part)
    dist_train(FSDP_EMA, part, '--resume')
    got = _assert_checkpoints_close(
        osp.join(part, 'epoch_4.pth'),
        osp.join(full, 'epoch_4.pth'),
        keys=('state_dict', 'ema_state_dict'))
    assert int(got['ema_state_dict']['steps']) == 24


def _fsdp_variant(tmp_path, base, extra='', snippet='fsdp_checkpointing.py'):
    """A config that puts ``base`` under a shipped FSDP snippet."""
    path = tmp_path / f'fsdp_{osp.basename(base)}'
    strategies = osp.join(REPO_ROOT, 'configs', '_base_', 'strategies')
    path.write_text(f'_base_ = [{base!r}, '
                    f'{osp.join(strategies, snippet)!r}]\n'
                    f'{extra}\n')
    return str(path)


# (config, --cfg-options): a few iterations of each model family; the
# generation recipes without their EMAHook (it deep-copies the model, which
# FSDP-wrapped modules do not support)
GLOO = 'env_cfg.dist_cfg.backend=gloo'
QUICKSTART = {
    'plain': ('configs/quickstart/visionllama-tiny-p7_1xb64-adamw-12e_'
              'mnist5k-28px.py', [
                  'train_cfg.max_epochs=1', 'train_dataloader.batch_size=8',
                  'train_dataloader.dataset.indices=32', GLOO
              ]),
    'mae': ('configs/mae_visionllama/mae_visionllama-tiny-p4_1xb32-coslr-'
            '10e_mnist5k-28px.py', [
                'train_cfg.max_epochs=1', 'train_dataloader.batch_size=8',
                'train_dataloader.dataset.indices=32', GLOO
            ]),
    'dit': ('configs/dit_llama/dit-llama-tiny_1xb32-3k_mnist5k-28.py', [
        'train_cfg.max_iters=4', 'train_dataloader.batch_size=8', GLOO,
        'custom_hooks=[]'
    ]),
    'sit': ('configs/sit_llama/sit-llama-tiny_1xb32-3k_mnist5k-28.py', [
        'train_cfg.max_iters=4', 'train_dataloader.batch_size=8', GLOO,
        'custom_hooks=[]'
    ]),
}


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(QUICKSTART))
def test_model_families_train_under_fsdp(family, tmp_path):
    """Tiny plain / MAE / DiT / SiT models: 2 processes, FSDP units at
    their blocks, activation checkpointing; the checkpoint holds the plain
    model's keys."""
    config, options = QUICKSTART[family]
    cfg_path = _fsdp_variant(tmp_path, osp.join(REPO_ROOT, config))
    work_dir = str(tmp_path / 'work')
    out = dist_train(cfg_path, work_dir, '--no-validate', '--cfg-options',
                     *options)
    assert 'FSDPStrategy' in out
    ckpts = glob.glob(osp.join(work_dir, '*.pth'))
    assert ckpts, out[-3000:]
    sd = state_dict(sorted(ckpts)[-1])
    assert sd and not any(
        '_fsdp_wrapped_module' in k or '_checkpoint_wrapped_module' in k
        for k in sd)


def _adapter_quickstart(tmp_path):
    """The embedded scikit-image caption / instruction data with a tiny
    LLaMA, CLIP and tokenizer in ``tmp_path/data``, and the quick-start
    config."""
    pytest.importorskip('skimage')
    pytest.importorskip('sentencepiece')
    import sentencepiece as spm

    from visionllama_mm.datasets.llama_adapter_skimage import (
        prepare_skimage_caption_data, write_tiny_models)
    data = str(tmp_path / 'data')
    paths = prepare_skimage_caption_data(data, tokenizer=True, vocab_size=512)
    vocab = spm.SentencePieceProcessor(
        model_file=paths['tokenizer']).get_piece_size()
    write_tiny_models(data, vocab)
    return data, osp.join(
        REPO_ROOT, 'configs', 'llama_adapter_v2',
        'llama-adapter-v2_tiny_1xb4-30it_skimage-caption.py')


@pytest.mark.slow
def test_adapter_under_fsdp_saves_adapter_weights_only(tmp_path):
    """The tiny LLaMA-Adapter V2 quick start under FSDP: the frozen LLaMA is
    sharded, only the phase's parameters are optimised, and the checkpoint
    holds the adapter-side tensors under the official names."""
    data, config = _adapter_quickstart(tmp_path)
    cfg_path = _fsdp_variant(
        tmp_path, config, "custom_hooks = [dict("
        "type='visionllama_mm.LLaMAAdapterV2CheckpointHook')]")
    work_dir = str(tmp_path / 'work')
    out = dist_train(cfg_path, work_dir, '--no-validate', '--cfg-options',
                     f'model.llm.meta_dir={data}/llama_tiny',
                     f'model.tokenizer.name_or_path={data}/tokenizer.model',
                     f'model.vision_encoder.name_or_path={data}/clip_tiny',
                     f'train_dataloader.dataset.data_root={data}',
                     'train_cfg.max_iters=2', GLOO)
    assert 'FSDPStrategy' in out
    (ckpt, ) = glob.glob(osp.join(work_dir, 'iter_2.pth'))
    sd = state_dict(ckpt)
    assert 'adapter_query.weight' in sd
    assert not any(k.startswith('clip.') for k in sd)
    assert not any(
        k.endswith(('attention.wq.weight', 'tok_embeddings.weight'))
        for k in sd)
    assert any(k.startswith('llama.layers.') for k in sd)


@pytest.mark.slow
def test_adapter_joint_phase_under_fsdp(tmp_path):
    """The paper's joint training (caption and instruction samples in one
    batch, each kind updating its own side) under FSDP: the two passes run
    on views of flat parameters, so the side routing must not touch
    requires_grad; both passes run, and the checkpoint holds both sides."""
    data, config = _adapter_quickstart(tmp_path)
    # one caption and one instruction sample per rank and iteration
    joint = f"""
model = dict(phase='joint', task='chat', fusion='early', bias_mode='paper')
train_dataloader = dict(
    batch_size=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(type='COCOCaption', data_root={data!r},
                 ann_file='annotations/captions_train.json',
                 indices=2, pipeline=_base_.train_pipeline),
            dict(type='visionllama_mm.LLaMAAdapterInstructionDataset',
                 data_root={data!r}, ann_file='annotations/instructions.json',
                 data_prefix=dict(img_path={data!r}), indices=2,
                 pipeline=_base_.instruction_pipeline),
        ]))
custom_hooks = [dict(type='visionllama_mm.LLaMAAdapterV2CheckpointHook')]
"""
    cfg_path = _fsdp_variant(tmp_path, config, joint)
    work_dir = str(tmp_path / 'work')
    out = dist_train(cfg_path, work_dir, '--no-validate', '--cfg-options',
                     f'model.llm.meta_dir={data}/llama_tiny',
                     f'model.tokenizer.name_or_path={data}/tokenizer.model',
                     f'model.vision_encoder.name_or_path={data}/clip_tiny',
                     'train_cfg.max_iters=2',
                     'default_hooks.logger.interval=1', GLOO)
    assert 'FSDPStrategy' in out
    (scalars, ) = glob.glob(
        osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        logs = [json.loads(line) for line in f]
    assert len(logs) == 2
    for log in logs:
        for key in ('loss', 'caption_ce', 'instruction_ce'):
            assert key in log and math.isfinite(log[key]), log
    sd = state_dict(osp.join(work_dir, 'iter_2.pth'))
    assert any(k.startswith('visual_blocks.') for k in sd)
    assert 'adapter_query.weight' in sd
    assert any(k.endswith('attention_norm.weight') for k in sd)
    assert not any(k.startswith('clip.') for k in sd)


@pytest.mark.slow
def test_dit_ema_under_fsdp_equals_replicated_ema(tmp_path):
    """Tiny DiT-LLaMA, 2 processes, 4 iterations: the EMA that FSDPEMAHook
    keeps on the parameter shards equals mmengine's EMAHook on DDP replicas
    (same data and noise on each rank); both checkpoints hold the average in
    ``state_dict`` and the trained weights in ``ema_state_dict``. Both runs
    start from one saved initialisation (Runner and FlexibleRunner build the
    model at different points of the random stream)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    config = osp.join(REPO_ROOT, QUICKSTART['dit'][0])
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    init = str(tmp_path / 'init.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), init)
    options = [
        'train_cfg.max_iters=4', 'train_dataloader.batch_size=8', GLOO,
        'randomness.seed=0', f'load_from={init}'
    ]
    ddp = str(tmp_path / 'ddp')
    dist_train(config, ddp, '--cfg-options', *options,
               'custom_hooks.0.momentum=0.5')
    cfg_path = _fsdp_variant(
        tmp_path,
        config, "custom_hooks = [dict(type='visionllama_mm.FSDPEMAHook', "
        "momentum=0.5, priority='ABOVE_NORMAL')]",
        snippet='fsdp.py')
    fsdp = str(tmp_path / 'fsdp')
    out = dist_train(cfg_path, fsdp, '--cfg-options', *options)
    assert 'FSDPEMAHook' in out
    from visionllama_mm.compat import load_checkpoint_safe
    want = load_checkpoint_safe(osp.join(ddp, 'iter_4.pth'))
    got = load_checkpoint_safe(osp.join(fsdp, 'iter_4.pth'))
    assert int(got['ema_state_dict']['steps']) == 4
    for key in ('state_dict', 'ema_state_dict'):
        assert sorted(got[key]) == sorted(want[key])
        for k in want[key]:
            torch.testing.assert_close(
                got[key][k], want[key][k], atol=1e-5, rtol=1e-5, msg=k)
    # the average is not the trained weights
    name = 'net.final_layer.linear.weight'
    if name in got['state_dict']:
        assert not torch.allclose(got['state_dict'][name],
                                  got['ema_state_dict'][f'module.{name}'])

"""Official MAE checkpoint format -> safe loader -> converter -> downstream.

The official MAE files (HF ``mtgv/VisionLLaMA-{Base,Large}-MAE``,
``epoch_{800,1600}.pth``; docs/visionllama.md#mae-checkpoints) are mmengine
runner checkpoints: ``meta``, ``state_dict``, ``message_hub`` (pickled
``HistoryBuffer`` objects holding numpy arrays), ``optimizer`` (with the AMP
loss scaler) and ``param_schedulers``. The synthetic file here is written by
an actual mmengine ``Runner`` training a tiny MAE-VisionLLaMA for one epoch
with the shipped pretraining config (reduced), plus the unused sin-cos
``backbone.pos_embed`` that the official encoder carries. It must load
through :func:`visionllama_mm.compat.load_checkpoint_safe`, convert with
``tools/model_converters/visionllama_to_mmpretrain.py`` to a tensors-only
file, and that file (as well as the raw epoch file) must initialise the
fine-tune, linear-probe, UperNet-style and ViTDet backbones through
``init_cfg=dict(type='Pretrained', prefix='backbone.')`` with exactly the
expected key differences.
"""
import copy
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from mae_utils import ROOT, load, reduce_classifier, reduce_pretrain

import visionllama_mm  # noqa: F401  (safe mmengine checkpoint loading)
from visionllama_mm.compat import load_checkpoint_safe
from visionllama_mm.registry import MODELS as OUR_MODELS

pytest.importorskip('mmpretrain')
from mmengine.logging import HistoryBuffer  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmpretrain.models.utils import \
    build_2d_sincos_position_embedding  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402

PRETRAIN = 'mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py'
FINETUNE = 'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py'
LINEAR = 'visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py'
CONVERTER = ROOT / 'tools' / 'model_converters' / \
    'visionllama_to_mmpretrain.py'
IMG, PATCH, LAYERS = 32, 8, 2


def _converter():
    spec = importlib.util.spec_from_file_location('vl_converter', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def mae_epoch_file(tmp_path_factory):
    """An mmengine runner checkpoint of a tiny MAE-VisionLLaMA run."""
    import cv2
    work = tmp_path_factory.mktemp('mae_run')
    images = work / 'images'
    images.mkdir()
    rng = np.random.RandomState(0)
    for i in range(8):
        cv2.imwrite(
            str(images / f'{i}.png'),
            rng.randint(0, 256, (IMG, IMG, 3), dtype=np.uint8))
    cfg = load(PRETRAIN)
    cfg.model = reduce_pretrain(cfg.model, IMG, PATCH, LAYERS)
    pipeline = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    pipeline[1]['scale'] = IMG
    cfg.train_dataloader.update(
        batch_size=4, num_workers=0, persistent_workers=False)
    cfg.train_dataloader['dataset'] = dict(
        type='CustomDataset',
        data_root=str(images),
        with_label=False,
        pipeline=pipeline)
    cfg.train_cfg.max_epochs = 1
    # AmpOptimWrapper needs a GPU; its extra state is added below
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale')
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work)
    cfg.experiment_name = 'mae_synthetic'
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    runner = Runner.from_cfg(cfg)
    runner.train()
    path = work / 'epoch_1.pth'
    # The official runs used AmpOptimWrapper (its GradScaler state is saved
    # with the optimizer) and an encoder with a frozen, never-added sin-cos
    # pos_embed (1, 1 + N, C): add both, keeping the runner's container.
    ckpt = load_checkpoint_safe(path)
    ckpt['optimizer']['loss_scaler'] = dict(
        scale=65536.0,
        growth_factor=2.0,
        backoff_factor=0.5,
        growth_interval=2000,
        _growth_tracker=2)
    n = (IMG // PATCH)**2
    ckpt['state_dict']['backbone.pos_embed'] = \
        build_2d_sincos_position_embedding(
            int(n**.5), 32, cls_token=True).float()
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope='module')
def converted(mae_epoch_file, tmp_path_factory):
    dst = tmp_path_factory.mktemp('converted') / 'mae_backbone.pth'
    _converter().main([str(mae_epoch_file), str(dst)])
    return dst


def _mae_state(path):
    return load_checkpoint_safe(path)['state_dict']


def test_official_container_structure(mae_epoch_file):
    # plain weights-only loading refuses it (pickled Python objects; a
    # fresh process, since importing visionllama_mm registers the
    # allow-list with torch) ...
    code = ('import sys, torch; torch.load(sys.argv[1], map_location="cpu",'
            ' weights_only=True)')
    proc = subprocess.run([sys.executable, '-c', code,
                           str(mae_epoch_file)],
                          capture_output=True,
                          text=True)
    assert proc.returncode != 0
    assert 'UnpicklingError' in proc.stderr
    assert 'HistoryBuffer' in proc.stderr or 'numpy' in proc.stderr
    # ... the safe loader accepts it without unpickling arbitrary code
    ckpt = load_checkpoint_safe(mae_epoch_file, map_location='cpu')
    assert {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'
    } <= set(ckpt)
    buffers = ckpt['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    assert isinstance(buffers['train/loss']._log_history, np.ndarray)
    assert ckpt['meta']['epoch'] == 1
    assert {'state', 'param_groups', 'loss_scaler'} <= set(ckpt['optimizer'])
    sd = ckpt['state_dict']
    n = (IMG // PATCH)**2
    # the docs/visionllama.md#mae-checkpoints key layout
    assert sd['backbone.cls_token'].shape == (1, 1, 32)
    assert sd['backbone.pos_embed'].shape == (1, 1 + n, 32)
    assert sd['backbone.patch_embed.projection.weight'].shape == (32, 3, PATCH,
                                                                  PATCH)
    assert sd['backbone.layers.1.attn.qkv.weight'].shape == (96, 32)
    assert sd['backbone.layers.0.ffn.w12.weight'].shape[0] == 2 * \
        sd['backbone.layers.0.ffn.w3.weight'].shape[1]
    assert 'backbone.ln1.weight' in sd
    assert sd['neck.decoder_pos_embed'].shape == (1, 1 + n, 32)
    assert {
        'neck.mask_token', 'neck.ln1.weight', 'neck.decoder_pred.weight',
        'neck.decoder_blocks.0.ffn.layers.0.0.weight'
    } <= set(sd)


def test_converted_is_tensors_only(mae_epoch_file, converted):
    out = torch.load(converted, map_location='cpu', weights_only=True)
    sd = out['state_dict']
    src = _mae_state(mae_epoch_file)
    assert 'backbone.pos_embed' not in sd
    expected = {k for k in src if k != 'backbone.pos_embed'}
    assert set(sd) == expected
    for k in expected:
        torch.testing.assert_close(sd[k], src[k], msg=k)


def _loaded_backbone(model_cfg, checkpoint):
    """Build, run init_weights (Pretrained) and return the backbone."""
    init_default_scope('mmpretrain')
    model = MODELS.build(
        reduce_classifier(model_cfg, checkpoint=checkpoint, num_layers=LAYERS))
    model.init_weights()
    return model.backbone


def _key_diff(backbone, checkpoint):
    """(missing, unexpected) of a strict load of the ``backbone.`` subtree.

    Goes through the backbone's own load hook (which drops ``pos_embed``
    and, without a class token, ``cls_token``).
    """
    from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
    sub = _load_checkpoint_with_prefix('backbone.', str(checkpoint))
    fresh = copy.deepcopy(backbone)
    result = fresh.load_state_dict(sub, strict=False)
    return set(result.missing_keys), set(result.unexpected_keys)


@pytest.mark.parametrize('source', ['converted', 'epoch_file'])
@pytest.mark.parametrize('config', [FINETUNE, LINEAR])
def test_classifier_configs_accept_mae_weights(config, source, mae_epoch_file,
                                               converted):
    path = converted if source == 'converted' else mae_epoch_file
    backbone = _loaded_backbone(load(config).model, path)
    src = _mae_state(mae_epoch_file)
    state = backbone.state_dict()
    # every encoder weight came from the checkpoint ...
    for k, v in state.items():
        if k.startswith('ln2.'):
            # the GAP norm is new in FT / LP
            # (docs/visionllama.md#mae-checkpoints)
            continue
        torch.testing.assert_close(v, src['backbone.' + k], msg=k)
    # ... and nothing else is missing or left over than by design:
    # ln2 is new; the MAE final norm ln1 is unused with final_norm=False
    missing, unexpected = _key_diff(backbone, path)
    assert missing == {'ln2.weight', 'ln2.bias'}
    assert unexpected == {'ln1.weight', 'ln1.bias'}
    if config == LINEAR:
        assert not any(p.requires_grad for p in backbone.parameters())
        # LP: ln2 stays at its identity init (frozen)
        assert torch.all(backbone.ln2.weight == 1)
        assert torch.all(backbone.ln2.bias == 0)


def test_upernet_backbone_accepts_mae_weights(converted, mae_epoch_file):
    """The plain UperNet backbone settings
    (docs/dense.md#upernet-with-the-plain-backbone) at a tiny size."""
    cfg = dict(
        type='visionllama_mm.VisionLLaMA',
        arch=dict(embed_dims=32, num_layers=LAYERS, num_heads=2),
        img_size=64,
        patch_size=PATCH,
        drop_path_rate=0.1,
        out_type='featmap',
        final_norm=False,
        out_indices=[0, 1],
        init_cfg=dict(
            type='Pretrained', checkpoint=str(converted), prefix='backbone.'))
    backbone = OUR_MODELS.build(cfg)
    backbone.init_weights()
    src = _mae_state(mae_epoch_file)
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, src['backbone.' + k], msg=k)
    missing, unexpected = _key_diff(backbone, converted)
    assert missing == set()
    assert unexpected == {'ln1.weight', 'ln1.bias'}
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [o.shape for o in outs] == [(1, 32, 8, 8)] * 2


DENSE_CONFIGS = sorted(
    list((ROOT / 'configs' /
          'upernet_visionllama').glob('upernet_visionllama-*-p16-mae*.py')) +
    list((ROOT / 'configs' /
          'vitdet_visionllama').glob('vitdet_*visionllama-*-p16-mae*.py')))


@pytest.mark.parametrize(
    'path',
    DENSE_CONFIGS or [None],
    ids=lambda p: p.name if p is not None else 'none')
def test_dense_configs_accept_mae_weights(path, converted, mae_epoch_file):
    """The shipped UperNet / ViTDet configs (dense task), reduced."""
    if path is None:
        pytest.skip('no UperNet / ViTDet configs on this branch')
    from mmengine.config import Config
    bb = copy.deepcopy(Config.fromfile(str(path)).model.backbone)
    assert bb.init_cfg.prefix == 'backbone.'
    bb.init_cfg.checkpoint = str(converted)
    bb.update(
        arch=dict(embed_dims=32, num_layers=LAYERS, num_heads=2),
        img_size=64,
        patch_size=PATCH)
    bb.out_indices = list(range(LAYERS))[-len(bb.get('out_indices', [-1])):]
    if 'window_block_indexes' in bb:
        bb.update(window_size=4, window_block_indexes=[0])
    backbone = OUR_MODELS.build(bb)
    backbone.init_weights()
    src = _mae_state(mae_epoch_file)
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, src['backbone.' + k], msg=k)
    missing, unexpected = _key_diff(backbone, converted)
    assert missing == set()
    assert unexpected == {'ln1.weight', 'ln1.bias'}


def test_mae_model_reloads_its_own_epoch_file(mae_epoch_file):
    """Resuming / the reconstruction tool: MAE + decoder reload exactly."""
    init_default_scope('mmpretrain')
    cfg = load(PRETRAIN)
    model = MODELS.build(reduce_pretrain(cfg.model, IMG, PATCH, LAYERS))
    src = _mae_state(mae_epoch_file)
    result = model.load_state_dict(src, strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys == []  # pos_embed dropped by the hook
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, src[k], msg=k)

"""The MAE / fine-tune / linear-probe configs: official values, builds, lrd.

Recipe values are docs/visionllama.md#recipes (the fine-tunes' are checked
against the official configs in tests/test_configs/test_official_recipes.py).
Every config builds its
model at a reduced size and runs one step; the layer-decay test checks the
per-parameter learning rates that mmpretrain's
``LearningRateDecayOptimWrapperConstructor`` gives our backbone
(docs/visionllama.md#layer-wise-lr-decay).
"""
import pytest
import torch
from mae_utils import (CLS_CONFIG_DIR, CONFIG_DIR, load, reduce_classifier,
                       reduce_pretrain)
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import visionllama_mm  # noqa: F401

mmpretrain = pytest.importorskip('mmpretrain')
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

PRETRAIN = {
    'mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py':
    dict(arch='b', dim=768, batch=512, epochs=800, warmup_start=1e-9, keep=3),
    'mae_visionllama-base-p16_8xb512-amp-coslr-1600e_in1k.py':
    dict(arch='b', dim=768, batch=512, epochs=1600, warmup_start=1e-4, keep=3),
    'mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k.py':
    dict(arch='l', dim=1024, batch=256, epochs=800, warmup_start=1e-9, keep=2),
    # the same recipe sharded with FSDP
    'mae_visionllama-large-p16_8xb256-fsdp-amp-coslr-800e_in1k.py':
    dict(arch='l', dim=1024, batch=256, epochs=800, warmup_start=1e-9, keep=2),
}
FINETUNE = {
    'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py':
    dict(
        arch='base',
        dim=768,
        layers=12,
        lr=2e-3,
        batch=128,
        accum=1,
        epochs=100,
        drop_path=0.1,
        ckpt='base-p16_mae-800e'),
    'visionllama-base-p16_mae1600-pre_8xb128-lrd45-coslr-100e_in1k.py':
    dict(
        arch='base',
        dim=768,
        layers=12,
        lr=2e-3,
        batch=128,
        accum=1,
        epochs=100,
        drop_path=0.1,
        ckpt='base-p16_mae-1600e'),
    'visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-coslr-50e_in1k.py':
    dict(
        arch='large',
        dim=1024,
        layers=24,
        lr=4e-3,
        batch=64,
        accum=2,
        epochs=50,
        drop_path=0.2,
        ckpt='large-p16_mae-800e'),
}
LINEAR = {
    'visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py':
    dict(arch='base', dim=768, layers=12, ckpt='base-p16_mae-800e'),
    'visionllama-base-p16_mae1600-pre_linear-8xb2048-coslr-90e_in1k.py':
    dict(arch='base', dim=768, layers=12, ckpt='base-p16_mae-1600e'),
    'visionllama-large-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py':
    dict(arch='large', dim=1024, layers=24, ckpt='large-p16_mae-800e'),
}


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmpretrain')


def test_every_config_is_covered():
    shipped = {p.name for p in CONFIG_DIR.glob('*.py')}
    imagenet = {n for n in shipped if n.endswith('_in1k.py')}
    assert imagenet == set(PRETRAIN)
    # the MNIST ones are run by test_mae_e2e.py
    assert len(shipped - imagenet) == 3
    for name in FINETUNE.keys() | LINEAR.keys():
        assert (CLS_CONFIG_DIR / name).is_file(), name


@pytest.mark.parametrize('name', sorted(PRETRAIN))
def test_pretrain_recipe(name):
    exp = PRETRAIN[name]
    cfg = load(name)
    assert cfg.custom_imports == dict(
        imports=['visionllama_mm'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain'
    model = cfg.model
    assert model.type == 'MAE'
    assert model.backbone == dict(
        type='visionllama_mm.MAELLaMA',
        arch=exp['arch'],
        patch_size=16,
        mask_ratio=0.75)
    neck = model.neck
    assert neck.type == 'MAEPretrainDecoder'
    assert (neck.patch_size, neck.in_chans, neck.embed_dim) == (16, 3,
                                                                exp['dim'])
    assert (neck.decoder_embed_dim, neck.decoder_depth, neck.decoder_num_heads,
            neck.mlp_ratio) == (512, 8, 16, 4.)
    assert model.head.type == 'MAEPretrainHead'
    assert model.head.norm_pix is True and model.head.patch_size == 16
    assert model.head.loss == dict(
        type='PixelReconstructionLoss', criterion='L2')
    assert model.init_cfg == [
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ]
    # data
    pipeline = cfg.train_dataloader.dataset.pipeline
    rrc = [t for t in pipeline if t.type == 'RandomResizedCrop'][0]
    assert (rrc.scale, tuple(rrc.crop_ratio_range), rrc.interpolation,
            rrc.backend) == (224, (0.2, 1.0), 'bicubic', 'pillow')
    assert [t for t in pipeline if t.type == 'RandomFlip'][0].prob == 0.5
    assert cfg.train_dataloader.batch_size == exp['batch']
    # the Runner passes these keys to the collate function (no `_scope_`)
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')
    # optimisation: lr 1.5e-4 * 4096 / 256 for B and (not rescaled) for L
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.loss_scale == 'dynamic'
    assert ow.optimizer.type == 'AdamW'
    assert ow.optimizer.lr == pytest.approx(2.4e-3)
    assert tuple(ow.optimizer.betas) == (0.9, 0.95)
    assert ow.optimizer.weight_decay == 0.05
    assert ow.paramwise_cfg.custom_keys == {
        k: dict(decay_mult=0.)
        for k in ('ln', 'bias', 'pos_embed', 'mask_token', 'cls_token')
    }
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch
    assert warmup.start_factor == pytest.approx(exp['warmup_start'])
    assert (warmup.begin, warmup.end, warmup.convert_to_iter_based) == (0, 40,
                                                                        True)
    assert cosine.type == 'CosineAnnealingLR' and cosine.by_epoch
    assert (cosine.begin, cosine.end, cosine.T_max) == (40, exp['epochs'],
                                                        exp['epochs'] - 40)
    assert cfg.train_cfg.max_epochs == exp['epochs']
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == exp['keep']
    assert cfg.randomness.seed == 0 and cfg.randomness.diff_rank_seed
    assert cfg.auto_scale_lr == dict(base_batch_size=4096)
    assert cfg.resume is False


@pytest.mark.parametrize('name', sorted(PRETRAIN))
def test_pretrain_builds_and_steps(name):
    cfg = load(name)
    torch.manual_seed(0)
    model = MODELS.build(reduce_pretrain(cfg.model))
    model.init_weights()
    bb = model.backbone
    assert type(bb).__name__ == 'MAELLaMA'
    # MAE-level init reached the encoder: Xavier-uniform Linear with zero
    # bias (PyTorch's default bias is uniform, never all zero) ...
    qkv = bb.layers[0].attn.qkv
    bound = (6. / sum(qkv.weight.shape))**0.5
    assert qkv.weight.abs().max() <= bound
    assert torch.all(qkv.bias == 0)
    # ... then the encoder's own init: FFN biases N(0, 1e-6), cls N(0, .02)
    assert 0 < bb.layers[0].ffn.w12.bias.abs().max() < 1e-5
    assert 0.005 < bb.cls_token.std() < 0.05
    data = dict(
        inputs=torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
        data_samples=[DataSample() for _ in range(2)])
    data = model.data_preprocessor(data, training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert losses['loss'].ndim == 0 and torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert bb.patch_embed.projection.weight.grad is not None
    # extract_feat uses the working no-mask path
    (feat, ) = model.extract_feat(data['inputs'])
    assert feat.shape == (2, 1 + 16, 32)


@pytest.mark.parametrize('name', sorted(LINEAR))
def test_linear_probe_recipe(name):
    exp = LINEAR[name]
    cfg = load(name)
    bb = cfg.model.backbone
    assert bb == dict(
        type='visionllama_mm.VisionLLaMA',
        arch=exp['arch'],
        img_size=224,
        patch_size=16,
        frozen_stages=exp['layers'],
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=f'checkpoints/visionllama-{exp["ckpt"]}_in1k.pth',
            prefix='backbone.'))
    assert cfg.model.neck == dict(
        type='ClsBatchNormNeck', input_features=exp['dim'])
    assert cfg.model.head.type == 'VisionTransformerClsHead'
    assert cfg.model.head.init_cfg == [
        dict(type='TruncNormal', layer='Linear', std=0.01)
    ]
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper'
    assert ow.optimizer == dict(
        type='LARS', lr=6.4, weight_decay=0.0, momentum=0.9)
    assert 'paramwise_cfg' not in ow and 'constructor' not in ow
    assert cfg.train_dataloader.batch_size == 2048
    warmup, cosine = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end) == (1e-4, 10)
    assert (cosine.begin, cosine.end, cosine.T_max) == (10, 90, 80)
    assert cfg.train_cfg.max_epochs == 90


@pytest.mark.parametrize('name', sorted(FINETUNE))
def test_layer_decay_scales(name):
    """lr of named parameters = lr * 0.45^(L + 1 - depth)
    (docs/visionllama.md#layer-wise-lr-decay)."""
    exp = FINETUNE[name]
    cfg = load(name)
    L = exp['layers']
    model = MODELS.build(reduce_classifier(cfg.model, num_layers=L))
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.update(type='OptimWrapper')  # AMP needs a GPU
    optim_cfg.pop('loss_scale', None)
    wrapper = build_optim_wrapper(model, optim_cfg)
    groups = {
        g['param_name']: g
        for g in wrapper.optimizer.param_groups if 'param_name' in g
    }
    assert len(groups) == sum(1 for p in model.parameters() if p.requires_grad)
    lr, rate = exp['lr'], 0.45

    def check(name, depth, decay):
        g = groups[name]
        assert g['lr'] == pytest.approx(lr * rate**(L + 1 - depth)), name
        assert g['weight_decay'] == pytest.approx(decay), name

    check('backbone.patch_embed.projection.weight', 0, 0.05)
    check('backbone.patch_embed.projection.bias', 0, 0.)
    for i in (0, 1, L // 2, L - 1):
        check(f'backbone.layers.{i}.attn.qkv.weight', i + 1, 0.05)
        check(f'backbone.layers.{i}.attn.qkv.bias', i + 1, 0.)
        check(f'backbone.layers.{i}.ffn.w12.weight', i + 1, 0.05)
        check(f'backbone.layers.{i}.ln1.weight', i + 1, 0.)
    check('backbone.ln2.weight', L + 1, 0.)
    check('head.fc.weight', L + 1, 0.05)
    check('head.fc.bias', L + 1, 0.)
    # patch embed rate^(L+1), layer i rate^(L-i), head 1
    assert groups['backbone.patch_embed.projection.weight']['lr_scale'] == \
        pytest.approx(rate**(L + 1))
    assert groups['backbone.layers.0.attn.proj.weight']['lr_scale'] == \
        pytest.approx(rate**L)
    assert groups['head.fc.weight']['lr_scale'] == 1

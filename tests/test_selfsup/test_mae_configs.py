"""The MAE / fine-tune / linear-probe configs: behaviour, builds, lrd.

The pretraining and linear-probe schedules end where the MAE recipe says
(batch, peak lr, warm-up, epochs; the fine-tunes are checked against the
official configs in tests/test_configs/test_official_recipes.py), the
weight-decay groups and the frozen linear-probe encoder are what the
optimizer sees, and every config builds its model at a reduced size and runs
one step; the layer-decay test checks the per-parameter learning rates that
mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` gives our backbone.
The resolved values themselves are pinned by
tests/test_configs/test_resolved_configs.py.
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
    # name: per-GPU batch and epochs of the official runs
    'mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py':
    dict(batch=512, epochs=800),
    'mae_visionllama-base-p16_8xb512-amp-coslr-1600e_in1k.py':
    dict(batch=512, epochs=1600),
    'mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k.py':
    dict(batch=256, epochs=800),
    # the same recipe sharded with FSDP
    'mae_visionllama-large-p16_8xb256-fsdp-amp-coslr-800e_in1k.py':
    dict(batch=256, epochs=800),
}
FINETUNE = {
    # name: depth and base lr (the other values: test_official_recipes.py)
    'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py':
    dict(layers=12, lr=2e-3),
    'visionllama-base-p16_mae1600-pre_8xb128-lrd45-coslr-100e_in1k.py':
    dict(layers=12, lr=2e-3),
    'visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-coslr-50e_in1k.py':
    dict(layers=24, lr=4e-3),
}
LINEAR = {
    # name: the MAE checkpoint it probes
    'visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py':
    'base-p16_mae-800e',
    'visionllama-base-p16_mae1600-pre_linear-8xb2048-coslr-90e_in1k.py':
    'base-p16_mae-1600e',
    'visionllama-large-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k.py':
    'large-p16_mae-800e',
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


GPUS = 8  # every official run: one node of 8 GPUs


def epoch_lrs(cfg):
    """The learning rate of each epoch under the config's schedulers
    (stepped once per epoch, as the Runner does for epoch-based ones)."""
    from mmpretrain.registry import PARAM_SCHEDULERS
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = []
    for sched in cfg.param_scheduler:
        sched = dict(sched)
        sched.pop('convert_to_iter_based', None)
        schedulers.append(
            PARAM_SCHEDULERS.build(dict(sched, optimizer=optimizer)))
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        for sched in schedulers:
            sched.step()
    return lrs


def warmup_epochs(lrs, peak):
    """Epochs until the lr first reaches ``peak`` (mmengine's LinearLR
    reaches its end factor in its last epoch), checking that it rises
    strictly before and never rises after."""
    top = next(i for i, lr in enumerate(lrs) if lr == pytest.approx(peak))
    assert all(a < b for a, b in zip(lrs[:top], lrs[1:top + 1]))
    assert all(a >= b - 1e-12 * peak for a, b in zip(lrs[top:], lrs[top + 1:]))
    return top + 1


def effective_batch(cfg):
    return (cfg.train_dataloader.batch_size * GPUS *
            cfg.optim_wrapper.get('accumulative_counts', 1))


@pytest.mark.parametrize('name', sorted(PRETRAIN))
def test_pretrain_schedule_is_the_papers(name):
    """MAE pretraining: lr 1.5e-4 * 4096 / 256 (the paper's batch 4096;
    the official L runs keep that lr at 8 x 256), reached after 40 warm-up
    epochs, cosine decay to zero at the epoch in the name."""
    cfg = load(name)
    assert effective_batch(cfg) == PRETRAIN[name]['batch'] * GPUS
    assert cfg.auto_scale_lr.base_batch_size == 4096  # lr is per 4096
    lrs = epoch_lrs(cfg)
    assert len(lrs) == PRETRAIN[name]['epochs']
    assert f'-{len(lrs)}e_' in name
    peak = 1.5e-4 * 4096 / 256
    assert max(lrs) == pytest.approx(peak)
    assert warmup_epochs(lrs, peak) == 40
    assert lrs[0] < 0.01 * peak and lrs[-1] < 1e-4 * peak
    # the Runner passes these keys to the collate function (no `_scope_`)
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')


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
    # weight decay 0.05 on weights, none on norms, biases and tokens
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg.update(type='OptimWrapper')  # AMP needs a GPU
    for key in ('loss_scale', 'dtype'):
        optim_cfg.pop(key, None)
    optimizer = build_optim_wrapper(model, optim_cfg).optimizer
    decay = {
        id(p): g['weight_decay']
        for g in optimizer.param_groups
        for p in g['params']
    }
    for pname, param in model.named_parameters():
        if not param.requires_grad:  # the fixed sin-cos pos_embed
            continue
        no_decay = param.ndim == 1 or pname.endswith(
            ('cls_token', 'mask_token', 'pos_embed'))
        assert decay[id(param)] == (0. if no_decay else 0.05), pname
    # extract_feat uses the working no-mask path
    (feat, ) = model.extract_feat(data['inputs'])
    assert feat.shape == (2, 1 + 16, 32)


@pytest.mark.parametrize('name', sorted(LINEAR))
def test_linear_probe_trains_only_the_head(name):
    """MAE linear probing: frozen encoder, batch 16384, lr 0.1 * 16384 /
    256, cosine to zero at epoch 90 after 10 warm-up epochs."""
    cfg = load(name)
    init = cfg.model.backbone.init_cfg
    assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
    assert LINEAR[name] in init.checkpoint
    model = MODELS.build(reduce_classifier(cfg.model))
    model.train()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith('backbone.') for n in trainable)
    assert effective_batch(cfg) == 16384
    lrs = epoch_lrs(cfg)
    assert len(lrs) == 90 and '-90e_' in name
    assert max(lrs) == pytest.approx(0.1 * 16384 / 256)
    assert warmup_epochs(lrs, max(lrs)) == 10
    assert lrs[-1] < 1e-3 * max(lrs)


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

"""The shipped full-scale recipes equal the official runs they name.

One table per family, written from the official sources (the file named
above each table; Meituan-AutoML/VisionLLaMA unless another repository is
named), holds the values that decide the result: model, data pipeline
(train and test), effective batch, optimizer, schedule, precision, seeding,
loss and evaluation. Each test resolves the shipped config (inheritance
included) and compares it with the table, so an edit cannot drift from the
official recipe silently. Deliberate differences are listed in the family
READMEs; where one is kept (the GSA table cache), the table checks that the
config says which behaviour it uses.
"""
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GPUS = 8  # every official run: one node of 8 GPUs


def load(folder, name):
    return Config.fromfile(osp.join(ROOT, 'configs', folder, name))


def value(cfg, key):
    """``cfg`` value at a dotted ``key``; integer parts index lists."""
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if part.lstrip('-').isdigit() else node[part]
    return node


def plain(obj):
    """Config dicts / lists / tuples as plain dicts and lists (without the
    ``_scope_`` keys mmengine adds to ``mmpretrain::`` bases)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def check(cfg, table):
    for key, expected in table.items():
        got = plain(value(cfg, key))
        if isinstance(expected, float):
            assert got == pytest.approx(expected, rel=1e-12), key
        else:
            assert got == plain(expected), key


def types(pipeline):
    return [t['type'] for t in pipeline]


def find(pipeline, type_):
    (found, ) = [t for t in pipeline if t['type'] == type_]
    return found


# ---------------------------------------------------------------------------
# DeiT-III-style plain VisionLLaMA (supervised ImageNet-1k).
# Sources: ImageNet1k_SFT.md (the commands), deit/dist_train_v2.sh (flags it
# adds: --mixup .8 --cutmix 1.0 --unscale-lr --dist-eval), deit/main_b.py
# (argument defaults; RASampler / DistributedSampler, drop_last=True, val
# batch int(1.5 * batch), timm create_scheduler stepped with
# lr_scheduler.step(epoch) after each epoch, BCEWithLogitsLoss for
# --bce-loss, seed + rank), deit/engine_b.py (targets.gt(0.0) before the
# loss, bf16 autocast where supported, fp16-autocast evaluate()),
# deit/datasets.py build_transform (eval Resize(int(256 / 224 * s),
# bicubic) + CenterCrop(s)), deit/augment_b.py (ThreeAugment with
# ColorJitter(0.3, 0.3, 0.3)), deit/requirements.txt (timm 0.3.2).
# ---------------------------------------------------------------------------
DEIT3_PRETRAIN = {
    # name: (arch, train/eval size s, --lr, --drop-path)
    'visionllama-deit3-small-p16_8xb256-lamb-800e_in1k.py':
    ('small', 224, 4e-3, 0.05),
    'visionllama-deit3-base-p16_8xb256-lamb-800e_in1k-192px.py':
    ('base', 192, 3e-3, 0.2),
    'visionllama-deit3-large-p16_8xb256-lamb-800e_in1k-128px.py':
    ('large', 128, 3e-3, 0.45),
}
DEIT3_FINETUNE = {
    # name: (arch, --drop-path, --reprob)
    'visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k.py':
    ('base', 0.2, 0.),
    'visionllama-deit3-large-p16_deit3-128px-pre_8xb64-adamw-20e_in1k.py':
    ('large', 0.45, 0.25),
}
DEIT_COMMON = {
    'model.train_cfg.augments':
    [dict(type='Mixup', alpha=0.8),
     dict(type='CutMix', alpha=1.0)],
    'optim_wrapper.type':
    'AmpOptimWrapper',
    'optim_wrapper.dtype':
    'bfloat16',  # engine autocast, bf16 if supported
    'train_dataloader.drop_last':
    True,
    'val_cfg.fp16':
    True,
    'test_cfg.fp16':
    True,
    'randomness.seed':
    0,  # seed + rank
    'randomness.diff_rank_seed':
    True,
    'train_cfg.by_epoch':
    True,
    'train_cfg.val_interval':
    1,  # evaluate() after every epoch
}


def eval_pipeline_of(size):
    return [
        'LoadImageFromFile',
        dict(
            type='ResizeEdge',
            scale=int(256 / 224 * size),
            edge='short',
            backend='pillow',
            interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=size),
        'PackInputs',
    ]


def check_eval_pipeline(cfg, size):
    for loader in ('val_dataloader', 'test_dataloader'):
        pipeline = cfg[loader]['dataset']['pipeline']
        for got, exp in zip(pipeline, eval_pipeline_of(size)):
            if isinstance(exp, str):
                assert got['type'] == exp
            else:
                assert plain(got) == exp, loader
        assert len(pipeline) == 4


@pytest.mark.parametrize('name', sorted(DEIT3_PRETRAIN))
def test_deit3_pretrain_recipe(name):
    arch, size, lr, drop_path = DEIT3_PRETRAIN[name]
    cfg = load('visionllama', name)
    check(cfg, DEIT_COMMON)
    check(
        cfg,
        {
            'model.backbone.arch':
            arch,
            'model.backbone.img_size':
            size,
            'model.backbone.drop_path_rate':
            drop_path,
            'model.head.loss':
            dict(type='visionllama_mm.BinarizedBCELoss'),
            'optim_wrapper.optimizer.type':
            'Lamb',  # --opt fusedlamb
            'optim_wrapper.optimizer.lr':
            lr,  # --unscale-lr
            'optim_wrapper.optimizer.weight_decay':
            0.05,
            'optim_wrapper.optimizer.eps':
            1e-8,
            'param_scheduler': [
                dict(
                    type='visionllama_mm.TimmCosineLR',
                    t_initial=800,
                    warmup_t=5,
                    warmup_lr_init=1e-6,
                    lr_min=1e-5,
                    lag=1,
                    by_epoch=True)
            ],
            'train_cfg.max_epochs':
            800,
            'train_dataloader.batch_size':
            256,
            'train_dataloader.sampler':
            dict(type='RepeatAugSampler', shuffle=True,
                 seed=0),  # --repeated-aug
            'val_dataloader.batch_size':
            384,
            # the script reports its best epoch (best_checkpoint.pth)
            'default_hooks.checkpoint.save_best':
            'accuracy/top1',
        })
    assert 'accumulative_counts' not in cfg.optim_wrapper  # 8 x 256 / step
    train = cfg.train_dataloader.dataset.pipeline
    assert types(train) == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
        'mmcv.RandomChoice', 'ColorJitter', 'PackInputs'
    ]  # ThreeAugment, no RandAugment, --reprob 0
    rrc = find(train, 'RandomResizedCrop')
    assert (rrc.scale, rrc.get('crop_ratio_range', (0.08, 1.)),
            rrc.interpolation) == (size, (0.08, 1.), 'bicubic')
    jitter = find(train, 'ColorJitter')
    assert (jitter.brightness, jitter.contrast,
            jitter.saturation) == (0.3, 0.3, 0.3)
    assert 'hue' not in jitter or jitter.hue == 0
    choices = find(train, 'mmcv.RandomChoice').transforms
    assert [t[0]['type'] for t in choices] == [
        'mmpretrain.RandomGrayscale', 'mmpretrain.Solarize',
        'mmpretrain.GaussianBlur'
    ]
    check_eval_pipeline(cfg, size)


@pytest.mark.parametrize('name', sorted(DEIT3_FINETUNE))
def test_deit3_finetune_recipe(name):
    arch, drop_path, reprob = DEIT3_FINETUNE[name]
    cfg = load('visionllama', name)
    check(cfg, DEIT_COMMON)
    check(
        cfg,
        {
            'model.backbone.arch':
            arch,
            'model.backbone.img_size':
            224,
            'model.backbone.drop_path_rate':
            drop_path,
            # no --bce-loss: timm SoftTargetCrossEntropy on the Mixup
            # targets smoothed by --smoothing 0.1
            'model.head.loss':
            dict(
                type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
            'optim_wrapper.optimizer':
            dict(
                type='AdamW',
                lr=1e-5,
                weight_decay=0.1,
                eps=1e-8,
                betas=(0.9, 0.999)),
            'param_scheduler': [
                dict(
                    type='visionllama_mm.TimmCosineLR',
                    t_initial=20,
                    warmup_t=5,
                    warmup_lr_init=1e-6,
                    lr_min=1e-5,
                    lag=1,
                    by_epoch=True)
            ],
            'train_cfg.max_epochs':
            20,
            'train_dataloader.batch_size':
            64,
            # --no-repeated-aug: DistributedSampler(shuffle, seed 0)
            'train_dataloader.sampler':
            dict(type='DefaultSampler', shuffle=True, seed=0),
            'val_dataloader.batch_size':
            96,
            'default_hooks.checkpoint.save_best':
            'accuracy/top1',
        })
    train = cfg.train_dataloader.dataset.pipeline
    assert types(train) == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'RandAugment',
        'RandomErasing', 'PackInputs'
    ]
    ra = find(train, 'RandAugment')  # --aa rand-m9-mstd0.5-inc1
    assert (ra.policies, ra.num_policies, ra.magnitude_level,
            ra.magnitude_std) == ('timm_increasing', 2, 9, 0.5)
    assert find(train, 'RandomErasing').erase_prob == reprob
    check_eval_pipeline(cfg, 224)


# ---------------------------------------------------------------------------
# Pyramid VisionLLaMA (supervised ImageNet-1k).
# Sources: ImageNet1k_SFT.md (the commands: --batch 128 --no-repeated-aug
# --seed 0 --drop-path 0.2 / 0.3 / 0.5), deit/dist_train.sh, deit/main.py
# (defaults: AdamW lr 5e-4 * 1024 / 512, wd 0.05, eps 1e-8, 300 epochs,
# 5 warm-up epochs from 1e-6, min lr 1e-5, --smoothing 0.1, Mixup 0.8 /
# CutMix 1.0, --reprob 0.25, --aa rand-m9-mstd0.5-inc1, drop_last=True,
# lr_scheduler.step(epoch) after each epoch), deit/engine.py (bf16 autocast
# where supported, non-finite-loss iterations skipped on every rank,
# fp16-autocast evaluate()), deit/datasets.py (eval resize 256, crop 224).
# ---------------------------------------------------------------------------
PYRAMID = {
    'pyramid-visionllama-s_8xb128_in1k.py': ('small', 512, 0.2),
    'pyramid-visionllama-b_8xb128_in1k.py': ('base', 768, 0.3),
    'pyramid-visionllama-l_8xb128_in1k.py': ('large', 1024, 0.5),
}


@pytest.mark.parametrize('name', sorted(PYRAMID))
def test_pyramid_imagenet_recipe(name):
    arch, width, drop_path = PYRAMID[name]
    cfg = load('pyramid_visionllama', name)
    check(cfg, {
        k: v
        for k, v in DEIT_COMMON.items() if k != 'optim_wrapper.type'
    })
    check(
        cfg, {
            'model.backbone.type':
            'visionllama_mm.PyramidVisionLLaMA',
            'model.backbone.arch':
            arch,
            'model.backbone.drop_path_rate':
            drop_path,
            'model.backbone.head_double_norm':
            True,
            'model.backbone.gsa_key_pos':
            'official',
            'model.backbone.auto_scale':
            False,
            'model.head.in_channels':
            width,
            'model.head.loss':
            dict(
                type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
            'optim_wrapper.type':
            'visionllama_mm.SkipNonFiniteAmpOptimWrapper',
            'optim_wrapper.optimizer':
            dict(
                type='AdamW',
                lr=5e-4 * 128 * GPUS / 512,
                weight_decay=0.05,
                eps=1e-8,
                betas=(0.9, 0.999)),
            'param_scheduler': [
                dict(
                    type='visionllama_mm.TimmCosineLR',
                    t_initial=300,
                    warmup_t=5,
                    warmup_lr_init=1e-6,
                    lr_min=1e-5,
                    lag=1,
                    by_epoch=True)
            ],
            'train_cfg.max_epochs':
            300,
            'train_dataloader.batch_size':
            128,
            'train_dataloader.sampler':
            dict(type='DefaultSampler', shuffle=True, seed=0),
        })
    assert 'clip_grad' not in cfg.optim_wrapper  # --clip-grad None
    train = cfg.train_dataloader.dataset.pipeline
    assert types(train) == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'RandAugment',
        'RandomErasing', 'PackInputs'
    ]
    assert find(train, 'RandomErasing').erase_prob == 0.25
    ra = find(train, 'RandAugment')
    assert (ra.policies, ra.magnitude_level,
            ra.magnitude_std) == ('timm_increasing', 9, 0.5)
    check_eval_pipeline(cfg, 224)


# ---------------------------------------------------------------------------
# MAE fine-tunes of the plain VisionLLaMA.
# Sources: mmpretrain/configs/mae/benchmarks/
# lama-base-p16_8xb128-coslr-800-lrd45-100e_in1k.py, ...-1600-lrd45-100e...,
# lama-large-p16_8xb128-coslr-800-lrd45-50e_in1k.py; PRETRAIN.md (the
# commands: tools/dist_train.sh CONFIG 8 --amp, i.e. AmpOptimWrapper with a
# dynamic loss scale).
# ---------------------------------------------------------------------------
MAE_FINETUNE = {
    # name: (arch, batch, accumulation, lr, epochs, drop path, checkpoint)
    'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py':
    ('base', 128, 1, 2e-3, 100, 0.1, 'base-p16_mae-800e'),
    'visionllama-base-p16_mae1600-pre_8xb128-lrd45-coslr-100e_in1k.py':
    ('base', 128, 1, 2e-3, 100, 0.1, 'base-p16_mae-1600e'),
    'visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-coslr-50e_in1k.py':
    ('large', 64, 2, 4e-3, 50, 0.2, 'large-p16_mae-800e'),
}


@pytest.mark.parametrize('name', sorted(MAE_FINETUNE))
def test_mae_finetune_recipe(name):
    arch, batch, accum, lr, epochs, drop_path, ckpt = MAE_FINETUNE[name]
    cfg = load('visionllama', name)
    check(
        cfg,
        {
            'model.backbone.arch':
            arch,
            'model.backbone.drop_path_rate':
            drop_path,
            'model.backbone.out_type':
            'avg_featmap',
            'model.backbone.final_norm':
            False,
            'model.backbone.init_cfg.checkpoint':
            f'checkpoints/visionllama-{ckpt}_in1k.pth',
            'model.head.loss':
            dict(
                type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
            'model.train_cfg.augments':
            [dict(type='Mixup', alpha=0.8),
             dict(type='CutMix', alpha=1.0)],
            'optim_wrapper.type':
            'AmpOptimWrapper',  # --amp
            'optim_wrapper.loss_scale':
            'dynamic',
            'optim_wrapper.optimizer':
            dict(
                type='AdamW',
                lr=lr,
                weight_decay=0.05,
                eps=1e-8,
                betas=(0.9, 0.999)),
            'optim_wrapper.constructor':
            'LearningRateDecayOptimWrapperConstructor',
            'optim_wrapper.paramwise_cfg.layer_decay_rate':
            0.45,
            'param_scheduler.0.type':
            'LinearLR',
            'param_scheduler.0.start_factor':
            1e-4,
            'param_scheduler.0.end':
            5,
            'param_scheduler.0.convert_to_iter_based':
            True,
            'param_scheduler.1.type':
            'CosineAnnealingLR',
            'param_scheduler.1.begin':
            5,
            'param_scheduler.1.end':
            epochs,
            'param_scheduler.1.T_max':
            epochs - 5,
            'param_scheduler.1.eta_min':
            1e-6,
            'param_scheduler.1.convert_to_iter_based':
            True,
            'train_cfg.max_epochs':
            epochs,
            'train_dataloader.batch_size':
            batch,
            'randomness.seed':
            0,
            'randomness.diff_rank_seed':
            True,
        })
    assert cfg.optim_wrapper.get('accumulative_counts', 1) == accum
    assert batch * accum * GPUS == 1024  # effective batch of every run
    assert 'dtype' not in cfg.optim_wrapper  # --amp: fp16
    train = cfg.train_dataloader.dataset.pipeline
    assert find(train, 'RandomErasing').erase_prob == 0.25
    test = cfg.test_dataloader.dataset.pipeline
    assert (find(test, 'ResizeEdge').scale,
            find(test, 'CenterCrop').crop_size) == (256, 224)


# ---------------------------------------------------------------------------
# DiT-LLaMA / SiT-LLaMA (class-conditional ImageNet 256 latents).
# Sources: dit/train.py and sit/train.py (AdamW lr 1e-4 wd 0, global batch
# 256 split over the GPUs, center_crop_arr(256) + RandomHorizontalFlip,
# seed = global_seed * world_size + rank with --global-seed 0,
# DistributedSampler(seed=global_seed), fp16 autocast + GradScaler unless
# --use_fp32, EMA decay 0.9999 initialised as a copy, latents * 0.18215),
# DiTLLaMA.md / SiTLLaMA.md (the commands, 400k iterations; 2400k for
# XL/2); guidance 1.5 of DiT-LLaMA from the paper (section 4.1), not
# DiTLLaMA.md's --cfg-scale 1.0.
# ---------------------------------------------------------------------------
DIT = {
    'dit-llama-b-4_8xb32-400k_in1k-256.py': ('DiTLLaMA_B_4', 400000),
    'dit-llama-l-4_8xb32-400k_in1k-256.py': ('DiTLLaMA_L_4', 400000),
    'dit-llama-xl-4_8xb32-400k_in1k-256.py': ('DiTLLaMA_XL_4', 400000),
    'dit-llama-xl-2_8xb32-2400k_in1k-256.py': ('DiTLLaMA_XL_2', 2400000),
}
SIT = {
    'sit-llama-s-2_8xb32-400k_in1k-256.py': 'SiTLLaMA_S_2',
    'sit-llama-b-2_8xb32-400k_in1k-256.py': 'SiTLLaMA_B_2',
    'sit-llama-l-2_8xb32-400k_in1k-256.py': 'SiTLLaMA_L_2',
    'sit-llama-xl-2_8xb32-400k_in1k-256.py': 'SiTLLaMA_XL_2',
}
LATENT_DIFFUSION = {
    'train_dataloader.batch_size':
    256 // GPUS,
    'train_dataloader.dataset.pipeline': [
        dict(
            type='mmagic.LoadImageFromFile',
            key='gt',
            channel_order='rgb',
            imdecode_backend='pillow'),
        dict(type='visionllama_mm.CenterCropArr', keys=['gt'], image_size=256),
        dict(type='mmagic.Flip', keys=['gt'], direction='horizontal'),
        dict(type='mmagic.PackInputs', keys=['gt'], data_keys=['gt_label']),
    ],
    'train_dataloader.sampler.seed':
    0,
    'randomness.seed':
    0,
    'randomness.diff_rank_seed':
    True,
    'optim_wrapper.type':
    'AmpOptimWrapper',  # fp16 + GradScaler
    'optim_wrapper.optimizer':
    dict(type='AdamW', lr=1e-4, weight_decay=0., betas=(0.9, 0.999)),
    'custom_hooks.0.type':
    'EMAHook',
    'custom_hooks.0.momentum':
    1e-4,
    'model.vae.scale_factor':
    0.18215,
    'model.net_cfg.input_size':
    32,
    'model.net_cfg.num_classes':
    1000,
    'model.net_cfg.class_dropout_prob':
    0.1,
    'model.net_cfg.learn_sigma':
    True,
}


@pytest.mark.parametrize('name', sorted(DIT))
def test_dit_llama_recipe(name):
    arch, iters = DIT[name]
    cfg = load('dit_llama', name)
    check(cfg, LATENT_DIFFUSION)
    check(
        cfg, {
            'model.type': 'visionllama_mm.DiTLLaMA',
            'model.arch': arch,
            'model.diffusion_steps': 1000,
            'model.sample_cfg.num_steps': 250,
            'model.sample_cfg.cfg_scale': 1.5,
            'train_cfg.max_iters': iters,
        })
    assert 'dtype' not in cfg.optim_wrapper
    assert 'clip_grad' not in cfg.optim_wrapper
    assert not cfg.get('param_scheduler')  # constant lr


@pytest.mark.parametrize('name', sorted(SIT))
def test_sit_llama_recipe(name):
    cfg = load('sit_llama', name)
    check(cfg, LATENT_DIFFUSION)
    check(
        cfg, {
            'model.type': 'visionllama_mm.SiTLLaMA',
            'model.arch': SIT[name],
            'model.transport.path': 'linear',
            'model.transport.prediction': 'velocity',
            'model.sample_cfg.mode': 'sde',
            'model.sample_cfg.num_steps': 250,
            'model.sample_cfg.cfg_scale': 1.0,
            'train_cfg.max_iters': 400000,
        })
    assert 'dtype' not in cfg.optim_wrapper
    assert not cfg.get('param_scheduler')


@pytest.fixture
def keep_rng_state():
    import random

    import numpy as np
    import torch
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def test_diff_rank_seed_matches_official_per_rank_seeds(
        monkeypatch, keep_rng_state):
    """mmengine seeds rank r with seed + r; DiT / SiT train.py with
    global_seed * world_size + r. With the shipped seed 0 they agree for
    every world size (another seed s gives s + r here, s * W + r there)."""
    import mmengine.runner.utils as runner_utils
    global_seed = 0  # train.py --global-seed default, the official runs
    for folder, name in (('dit_llama', sorted(DIT)[0]), ('sit_llama',
                                                         sorted(SIT)[0])):
        randomness = load(folder, name).randomness
        for world_size in (1, 2, 4, 8, 16):
            for rank in range(world_size):
                monkeypatch.setattr(runner_utils, 'get_rank', lambda r=rank: r)
                seed = runner_utils.set_random_seed(**randomness)
                assert seed == global_seed * world_size + rank
    # the documented difference for a non-zero seed (rank 3 of 8)
    monkeypatch.setattr(runner_utils, 'get_rank', lambda: 3)
    assert runner_utils.set_random_seed(seed=1, diff_rank_seed=True) == 4


# ---------------------------------------------------------------------------
# Detection.
# Sources: Detection.md (the commands, both with --amp);
# mmdetection/configs/twins/mask-rcnn_twins-b-p4-w7_fpn_ms-crop-3x_coco.py
# (Pyramid-B Mask R-CNN; -S / -L are our extrapolations) and
# mmdetection/projects/ViTDet/configs/lamadet_mask-rcnn_vit-b-mae_lsj-800-
# 36e.py + lsj-36e_coco-instance.py (ViTDet-B; -L is our extrapolation).
# ---------------------------------------------------------------------------
MASK_RCNN = {
    # name: (arch, drop path, FPN inputs, extrapolated)
    'mask-rcnn_pyramid-visionllama-s_fpn_amp-ms-crop-3x_coco.py':
    ('small', 0.2, [64, 128, 256, 512], True),
    'mask-rcnn_pyramid-visionllama-b_fpn_amp-ms-crop-3x_coco.py':
    ('base', 0.2, [96, 192, 384, 768], False),
    'mask-rcnn_pyramid-visionllama-l_fpn_amp-ms-crop-3x_coco.py':
    ('large', 0.3, [128, 256, 512, 1024], True),
}


@pytest.mark.parametrize('name', sorted(MASK_RCNN))
def test_mask_rcnn_pyramid_recipe(name):
    arch, drop_path, channels, extrapolated = MASK_RCNN[name]
    cfg = load('mask_rcnn_pyramid_visionllama', name)
    check(
        cfg,
        {
            'model.backbone.type':
            'visionllama_mm.PyramidVisionLLaMADET',
            'model.backbone.arch':
            arch,
            'model.backbone.drop_path_rate':
            drop_path,
            'model.backbone.auto_scale':
            True,
            # deliberate difference from the official token-count cache
            'model.backbone.gsa_table_cache':
            'per_shape',
            'model.neck.in_channels':
            channels,
            'train_cfg.max_epochs':
            36,
            'param_scheduler': [
                dict(
                    type='LinearLR',
                    start_factor=0.001,
                    by_epoch=False,
                    begin=0,
                    end=1000),
                dict(
                    type='MultiStepLR',
                    begin=0,
                    end=36,
                    by_epoch=True,
                    milestones=[27, 33],
                    gamma=0.1)
            ],
            'optim_wrapper.type':
            'AmpOptimWrapper',  # --amp
            'optim_wrapper.loss_scale':
            'dynamic',
            'optim_wrapper.optimizer':
            dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
            'optim_wrapper.paramwise_cfg.custom_keys.norm':
            dict(decay_mult=0.),
            'train_dataloader.batch_size':
            2,  # x 8 GPUs = 16
        })
    train = cfg.train_dataloader.dataset.pipeline
    assert types(train) == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomFlip', 'RandomChoice',
        'PackDetInputs'
    ]
    branches = find(train, 'RandomChoice').transforms
    ms = [(480 + 32 * i, 1333) for i in range(11)]
    assert [tuple(s) for s in branches[0][0].scales] == ms
    assert [t['type'] for t in branches[1]
            ] == ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
    assert tuple(branches[1][1].crop_size) == (384, 600)
    assert [tuple(s) for s in branches[1][2].scales] == ms
    assert ('EXTRAPOLATED' in open(
        osp.join(ROOT, 'configs', 'mask_rcnn_pyramid_visionllama',
                 name)).read()) == extrapolated


VITDET = {
    # name: (arch, drop path, layer decay, layers, extrapolated)
    f'vitdet_mask-rcnn_visionllama-{size}-p16-mae800_8xb4-accum2-lsj-36e_coco'
    f'.py':
    values
    for size, values in (('base', ('base', 0.1, 0.7, 12, False)),
                         ('large', ('large', 0.4, 0.8, 24, True)))
}


@pytest.mark.parametrize('name', sorted(VITDET))
def test_vitdet_recipe(name):
    arch, drop_path, decay, layers, extrapolated = VITDET[name]
    cfg = load('vitdet_visionllama', name)
    check(
        cfg,
        {
            'model.backbone.type':
            'visionllama_mm.LLaMADET',
            'model.backbone.arch':
            arch,
            'model.backbone.img_size':
            1024,
            'model.backbone.drop_path_rate':
            drop_path,
            'model.backbone.window_size':
            14,
            'model.neck.out_channels':
            256,
            'model.rpn_head.num_convs':
            2,
            'model.roi_head.bbox_head.type':
            'Shared4Conv1FCBBoxHead',
            'optim_wrapper.type':
            'AmpOptimWrapper',  # --amp
            'optim_wrapper.accumulative_counts':
            2,
            'optim_wrapper.paramwise_cfg.layer_decay_rate':
            decay,
            'optim_wrapper.paramwise_cfg.num_layers':
            layers,
            'optim_wrapper.optimizer':
            dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
            'train_cfg.max_iters':
            137250,
            'param_scheduler.0.end':
            250,
            'param_scheduler.1.milestones': [102937, 125812],
            'train_dataloader.batch_size':
            4,  # x 8 GPUs x 2 accumulation
            'custom_hooks.0.type':
            'visionllama_mm.Fp16CompressionHook',
        })
    if not extrapolated:
        assert cfg.model.backbone.window_block_indexes == [
            0, 1, 3, 4, 6, 7, 9, 10
        ]
    train = cfg.train_dataloader.dataset.pipeline
    lsj = find(train, 'RandomResize')
    assert (tuple(lsj.scale), tuple(lsj.ratio_range)) == ((1024, 1024), (0.1,
                                                                         2.0))
    assert ('EXTRAPOLATED'
            in open(osp.join(ROOT, 'configs', 'vitdet_visionllama',
                             name)).read()) == extrapolated

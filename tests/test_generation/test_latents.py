"""Cached SD-VAE latents: extraction tool (sharded, resumable) and training
from them equals encoding on the fly when the VAE sampling noise is fixed.

A tiny randomly initialised ``diffusers.AutoencoderKL`` stands in for the
SD VAE (no weights can be downloaded); it has the same interface.
"""
import os
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('mmagic')
diffusers = pytest.importorskip('diffusers')

from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(__file__)))
DIT_CFG = osp.join(ROOT, 'configs', 'dit_llama',
                   'dit-llama-tiny_1xb32-3k_mnist5k-28.py')
SIT_CFG = osp.join(ROOT, 'configs', 'sit_llama',
                   'sit-llama-tiny_1xb32-3k_mnist5k-28.py')


def tiny_vae(path):
    vae = diffusers.AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=('DownEncoderBlock2D', 'DownEncoderBlock2D'),
        up_block_types=('UpDecoderBlock2D', 'UpDecoderBlock2D'),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=28)
    torch.manual_seed(0)
    for p in vae.parameters():  # not the symmetric default init
        p.data.add_(torch.randn_like(p) * 0.02)
    vae.save_pretrained(path)
    return path


def latent_config(tmp_path, base, flip=True):
    """The MNIST quick start in the latent space of the tiny VAE (14 x 14
    latents), on 12 digits, with a random flip in the pipeline."""
    vae = tiny_vae(str(tmp_path / 'vae'))
    pipeline = [
        dict(type='mmagic.PackInputs', keys=['img'], data_keys=['gt_label'])
    ]
    if flip:
        pipeline.insert(
            0, dict(type='mmagic.Flip', keys=['img'], direction='horizontal'))
    text = f'''
_base_ = [{base!r}]
model = dict(
    arch=dict(in_channels=4, input_size=14, patch_size=2, depth=2),
    vae=dict(path={vae!r}))
train_dataloader = dict(dataset=dict(
    classes=[1, 7], max_per_class=6, pipeline={pipeline!r}))
'''
    path = tmp_path / 'latent_cfg.py'
    path.write_text(text)
    return str(path)


def extract(cfg, out_dir, *extra):
    old = sys.argv
    sys.argv = [
        'extract_latents.py', cfg, '--out-dir',
        str(out_dir), '--shard-size', '5', '--batch-size', '3', '--device',
        'cpu'
    ] + list(extra)
    try:
        runpy.run_path(
            osp.join(ROOT, 'tools', 'dataset_converters',
                     'extract_latents.py'),
            run_name='__main__')
    finally:
        sys.argv = old


def build(cfg, **overrides):
    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.registry import MODELS
    model_cfg = cfg.model.to_dict()  # plain dict: update replaces keys
    model_cfg.update(overrides)
    return MODELS.build(model_cfg)


@pytest.mark.parametrize('base', [DIT_CFG, SIT_CFG])
def test_cached_latents_train_like_on_the_fly_encoding(tmp_path, base):
    from mmengine.registry import DATASETS, init_default_scope

    from visionllama_mm.datasets import CachedLatents
    cfg = Config.fromfile(latent_config(tmp_path, base))
    init_default_scope('mmagic')
    extract(cfg.filename, tmp_path / 'latents')
    files = sorted(os.listdir(tmp_path / 'latents'))
    assert files == ['job.json'] + [f'labels_{k:06d}.npy' for k in range(3)] \
        + [f'moments_{k:06d}.npy' for k in range(3)]

    # the images exactly as the on-the-fly training sees them (no flip)
    ds_cfg = cfg.train_dataloader.dataset.copy()
    ds_cfg.pipeline = ds_cfg.pipeline[1:]
    images = DATASETS.build(ds_cfg)
    cached = CachedLatents(str(tmp_path / 'latents'), flip_prob=0.)
    assert len(cached) == len(images) == 12

    on_the_fly = build(cfg)
    from_cache = build(
        cfg,
        cached_latents=True,
        data_preprocessor=dict(type='ImgDataPreprocessor'))
    for p in on_the_fly.parameters():  # leave the zero init
        p.data.normal_(0, 0.02)
    from_cache.load_state_dict(on_the_fly.state_dict())

    idx = [0, 4, 5, 11]  # across shards
    a = on_the_fly.data_preprocessor(
        pseudo_collate([images[i] for i in idx]), training=True)
    b = from_cache.data_preprocessor(
        pseudo_collate([cached[i] for i in idx]), training=True)
    assert b['inputs'].shape == (4, 8, 14, 14)  # mean and log-variance
    torch.manual_seed(3)  # the VAE posterior sample, then t and the noise
    loss_a = on_the_fly(a['inputs'], a['data_samples'], mode='loss')['loss']
    loss_a.backward()
    torch.manual_seed(3)
    loss_b = from_cache(b['inputs'], b['data_samples'], mode='loss')['loss']
    loss_b.backward()
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for (name, pa), pb in zip(on_the_fly.named_parameters(),
                              from_cache.parameters()):
        torch.testing.assert_close(
            pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)
    # the VAE was never loaded by the cached model
    assert from_cache.vae._vae is None
    # a different posterior sample gives a different loss
    torch.manual_seed(4)
    assert not torch.allclose(
        from_cache(b['inputs'], b['data_samples'], mode='loss')['loss'],
        loss_b)

    # flipped moments are the encoding of the flipped image
    flipped = CachedLatents(str(tmp_path / 'latents'), flip_prob=1.)
    x = a['inputs'][:1]
    torch.testing.assert_close(
        flipped[0]['inputs'][None],
        on_the_fly.vae.moments(x.flip(-1)),
        rtol=1e-5,
        atol=1e-6)
    assert flipped[0]['data_samples']['gt_label'] == int(
        on_the_fly.labels_from(a['data_samples'])[0])


def test_extraction_resumes_and_checks_the_job(tmp_path):
    cfg = latent_config(tmp_path, DIT_CFG, flip=False)
    out = tmp_path / 'latents'
    extract(cfg, out)
    with open(out / 'moments_000001.npy', 'rb') as f:
        assert np.load(f).shape == (5, 1, 8, 14, 14)  # no flip stored
    whole = np.load(out / 'moments_000001.npy')
    before = os.stat(out / 'moments_000000.npy').st_mtime_ns
    os.remove(out / 'labels_000001.npy')  # an unfinished shard
    (out / 'labels_000002.npy.tmp123').write_bytes(b'partial')
    from visionllama_mm.datasets import CachedLatents
    with pytest.raises(FileNotFoundError, match=r'shards \[1\]'):
        CachedLatents(str(out))
    extract(cfg, out)
    assert os.stat(out / 'moments_000000.npy').st_mtime_ns == before
    np.testing.assert_array_equal(np.load(out / 'moments_000001.npy'), whole)
    assert len(CachedLatents(str(out))) == 12
    with pytest.raises(ValueError, match='another job'):
        extract(cfg, out, '--shard-size', '4')
    with pytest.raises(ValueError, match='cached_latents=True needs'):
        build(Config.fromfile(DIT_CFG), cached_latents=True)

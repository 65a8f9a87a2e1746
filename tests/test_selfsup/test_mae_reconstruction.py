"""The reconstruction-grid tool's pieces, in process, at tiny size.

The command line itself (config + MAE checkpoint -> PNG) runs in
``test_mae_e2e.py`` on a checkpoint written by ``tools/train.py``.
"""
import importlib.util

import numpy as np
import pytest
import torch
from mae_utils import CONFIG_DIR, ROOT, load

pytest.importorskip('mmpretrain')
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402

import visionllama_mm  # noqa: F401,E402

TOOL = ROOT / 'tools' / 'analysis_tools' / 'mae_reconstruction.py'
MAE_CFG = 'mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px.py'


def _tool():
    spec = importlib.util.spec_from_file_location('mae_reconstruction', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def model():
    init_default_scope('mmpretrain')
    cfg = load(MAE_CFG)
    torch.manual_seed(0)
    m = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    m.init_weights()
    return m.eval()


def test_reconstruct_pastes_visible_patches(model):
    tool = _tool()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 28, 28)
    out = tool.reconstruct(model, x, seed=3)
    p = 4
    # the pixel mask is the patch mask (1 = removed), constant per patch
    torch.manual_seed(3)
    _, mask, ids_restore = model.backbone(x)
    patches = out['mask'].unfold(2, p, p).unfold(3, p, p)  # (B,1,7,7,p,p)
    assert torch.equal(patches.amax((-1, -2)), patches.amin((-1, -2)))
    assert torch.equal(patches[:, 0, :, :, 0, 0].flatten(1), mask)
    visible = out['mask'] == 0
    torch.testing.assert_close(out['pasted'][visible], x[visible])
    torch.testing.assert_close(out['masked'][visible], x[visible])
    assert torch.all(out['masked'][~visible] == 0)
    torch.testing.assert_close(out['pasted'][~visible], out['recon'][~visible])
    # norm_pix: predictions are mapped back with the patch mean / variance
    with torch.no_grad():
        torch.manual_seed(3)
        latent, _, ids = model.backbone(x)
        pred = model.neck(latent, ids)
    target = model.head.patchify(x)
    mean = target.mean(-1, keepdim=True)
    std = (target.var(-1, keepdim=True) + 1e-6)**.5
    torch.testing.assert_close(
        model.head.patchify(out['recon']), pred * std + mean)
    # the masks follow the seed
    other = tool.reconstruct(model, x, seed=4)
    assert not torch.equal(other['mask'], out['mask'])
    again = tool.reconstruct(model, x, seed=3)
    assert torch.equal(again['mask'], out['mask'])


def test_grid_layout_and_denormalisation():
    tool = _tool()
    mean = torch.tensor([33.32]).view(-1, 1, 1)
    std = torch.tensor([78.57]).view(-1, 1, 1)
    pixels = torch.arange(28 * 28, dtype=torch.float32).view(1, 28, 28) % 256
    img = tool.to_uint8((pixels - mean) / std, mean, std)
    assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], pixels[0].numpy().astype(np.uint8))
    masked = torch.zeros(1, 28, 28)
    masked[:, :4, :4] = 1
    grey = tool.to_uint8((pixels - mean) / std, mean, std, masked=masked)
    assert np.all(grey[:4, :4] == 127) and np.array_equal(grey[4:], img[4:])
    rows = [[img] * 4 for _ in range(3)]
    grid = tool.make_grid(rows, tile=96)
    # 28 px tiles upscaled x4, 4 px gaps, a 16 px header
    assert grid.shape == (16 + 3 * (112 + 4) + 4, 4 * (112 + 4) + 4, 3)
    tile = grid[16 + 4:16 + 4 + 112, 4:4 + 112]
    assert np.array_equal(tile[::4, ::4], img)


def test_deterministic_pipeline():
    tool = _tool()
    cfg = load(MAE_CFG)
    pipeline = tool.deterministic_pipeline(
        cfg.train_dataloader.dataset.pipeline +
        [dict(type='RandomFlip', prob=0.5)])
    assert [t['type']
            for t in pipeline] == ['ResizeEdge', 'CenterCrop', 'PackInputs']
    assert pipeline[0]['scale'] == 28 and pipeline[1]['crop_size'] == 28
    assert (CONFIG_DIR / MAE_CFG).is_file()

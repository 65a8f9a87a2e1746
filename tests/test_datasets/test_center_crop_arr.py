"""CenterCropArr: ADM's center_crop_arr (the DiT / SiT preprocessing)."""
import numpy as np
import pytest

from visionllama_mm.datasets.transforms import CenterCropArr, center_crop_arr


def test_box_halving_then_centre_crop():
    """1024 x 1536: halved twice by a 2 x 2 box (512 >= 2 * 256, then 256 <
    512 stops), no resize (the short side is 256), crop the centre."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1024, 1536, 3), dtype=np.uint8)
    out = center_crop_arr(img, 256)
    x = img.astype(np.float64)
    for _ in range(2):  # 2 x 2 box average, as PIL's BOX filter
        x = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4
    assert x.shape == (256, 384, 3)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    # PIL's BOX filter rounds each halving up to 1 above the exact mean
    diff = out.astype(np.float64) - x[:, 64:320]
    assert diff.min() >= -0.5 and diff.max() <= 2
    # and exactly: two PIL box halvings (W, H sizes), then the centre crop
    from PIL import Image
    ref = Image.fromarray(img).resize((768, 512), Image.BOX)
    ref = np.asarray(ref.resize((384, 256), Image.BOX))
    np.testing.assert_array_equal(out, ref[:, 64:320])


def test_no_halving_below_twice_the_target():
    """511 x 300 (short side < 512): one bicubic resize, not halved."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 511, 3), dtype=np.uint8)
    from PIL import Image
    scale = 256 / 300
    size = (round(511 * scale), round(300 * scale))  # PIL: (W, H)
    ref = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
    left = (size[0] - 256) // 2
    np.testing.assert_array_equal(
        center_crop_arr(img, 256), ref[:, left:left + 256])


def test_exact_size_is_a_centre_crop():
    img = np.arange(256 * 300, dtype=np.uint32).reshape(256, 300) % 251
    img = img.astype(np.uint8)
    np.testing.assert_array_equal(center_crop_arr(img, 256), img[:, 22:278])


def test_transform_and_errors():
    rng = np.random.default_rng(2)
    results = dict(gt=rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    out = CenterCropArr(keys='gt', image_size=64)(results)
    assert out['gt'].shape == (64, 64, 3)
    with pytest.raises(ValueError, match='image_size'):
        CenterCropArr(keys='gt', image_size=0)
    with pytest.raises(TypeError, match='uint8'):
        center_crop_arr(np.zeros((8, 8), np.float32), 4)

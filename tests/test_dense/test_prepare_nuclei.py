"""prepare_nuclei: real stardist nuclei -> semantic + COCO instance splits."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from nuclei_utils import TOOL, load_prepare_nuclei  # noqa: E402

pn = load_prepare_nuclei()


@pytest.fixture(scope='module')
def prepared(stardist_wheel, tmp_path_factory):
    out = tmp_path_factory.mktemp('nuclei') / 'nuclei'
    summary = pn.prepare(out=str(out), wheel=stardist_wheel)
    image, labels = pn.read_wheel_images(stardist_wheel)
    return out, summary, image, labels


def test_source_is_the_real_image(stardist_wheel):
    image, labels = pn.read_wheel_images(stardist_wheel)
    assert image.shape == labels.shape == (512, 512)
    assert len(np.unique(labels)) - 1 == 125
    assert 0.1 < (labels > 0).mean() < 0.4
    # nuclei are brighter than the background
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


def test_wheel_is_cached(stardist_wheel):
    # a second call finds the cached wheel without running pip
    assert pn.fetch_stardist_wheel(osp.dirname(stardist_wheel)) == \
        stardist_wheel


def test_semantic_split(prepared):
    out, summary, image, labels = prepared
    assert summary['semantic'] == dict(train=35, val=4)
    rgb = pn.to_rgb8(image)
    for split, n in summary['semantic'].items():
        names = sorted(os.listdir(out / 'semantic' / 'img_dir' / split))
        assert len(names) == n
        for name in names:
            img = np.array(
                Image.open(out / 'semantic' / 'img_dir' / split / name))
            ann = np.array(
                Image.open(out / 'semantic' / 'ann_dir' / split / name))
            assert img.shape == (128, 128, 3) and ann.shape == (128, 128)
            y, x = (int(t[1:]) for t in name[:-4].split('_')[2:])
            np.testing.assert_array_equal(img, rgb[y:y + 128, x:x + 128])
            np.testing.assert_array_equal(ann, labels[y:y + 128, x:x + 128]
                                          > 0)
            # val tiles are the right 128 columns, train tiles never reach
            assert (x >= 384) == (split == 'val')
            if split == 'train':
                assert x + 128 <= 384


def test_instance_split(prepared):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    out, summary, _, labels = prepared
    total = 0
    for split in ('train', 'val'):
        ann_file = out / 'instance' / 'annotations' / \
            f'instances_{split}.json'
        coco = COCO(str(ann_file))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            ['nucleus']
        assert len(coco.getImgIds()) == summary['instance'][split]['images']
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            assert osp.exists(out / 'instance' / 'images' / split /
                              info['file_name'])
            y, x = (int(t[1:]) for t in info['file_name'][:-4].split('_')[2:])
            tile = labels[y:y + 128, x:x + 128]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            union = np.zeros((128, 128), bool)
            for ann in anns:
                m = mask_utils.decode(ann['segmentation']).astype(bool)
                assert m.sum() == ann['area'] >= 8
                # each mask is exactly one labelled instance of the tile
                ids = np.unique(tile[m])
                assert len(ids) == 1 and ids[0] > 0
                np.testing.assert_array_equal(m, tile == ids[0])
                bx, by, bw, bh = ann['bbox']
                ys, xs = np.nonzero(m)
                assert (bx, by) == (xs.min(), ys.min())
                assert (bw, bh) == (xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1)
                union |= m
            assert union.sum() <= (tile > 0).sum()
        total += len(coco.getAnnIds())
        if split == 'val':
            # the val region holds its whole share of the 125 nuclei
            assert len(coco.getAnnIds()) >= 25
    assert total == sum(v['instances'] for v in summary['instance'].values())


def test_cli(stardist_wheel, tmp_path):
    out = tmp_path / 'n'
    res = subprocess.run([
        sys.executable, TOOL, '--out',
        str(out), '--wheel', stardist_wheel, '--tile', '256', '--val-width',
        '256', '--train-stride', '256'
    ],
                         capture_output=True,
                         text=True,
                         check=True)
    summary = json.loads(res.stdout)
    assert summary['num_instances'] == 125
    assert summary['semantic'] == dict(train=2, val=2)
    assert json.load(open(out / 'summary.json')) == summary


def test_bad_tiling():
    with pytest.raises(ValueError, match='multiples of tile'):
        pn.tile_origins(512, 512, 128, 100, 64)

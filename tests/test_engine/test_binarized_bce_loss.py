"""BinarizedBCELoss: DeiT-III's BCE on binarised Mixup / CutMix targets."""
import math

import pytest
import torch

from visionllama_mm.engine import BinarizedBCELoss
from visionllama_mm.registry import MODELS


def bce_by_definition(logits, targets):
    """mean over b, c of -[y log s(x) + (1 - y) log(1 - s(x))]."""
    total, n = 0., 0
    for row_x, row_y in zip(logits.tolist(), targets.tolist()):
        for x, y in zip(row_x, row_y):
            p = 1 / (1 + math.exp(-x))
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
            n += 1
    return total / n


def test_mixed_targets_are_binarised():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, dtype=torch.float64)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 1, 4, 0])
    lam = 0.3
    eye = torch.eye(6, dtype=torch.float64)
    mixed = lam * eye[a] + (1 - lam) * eye[b]  # Mixup / CutMix targets
    binary = (eye[a] + eye[b]).clamp(max=1)  # targets.gt(0.0)
    loss = BinarizedBCELoss()(logits, mixed, avg_factor=4)
    assert loss.item() == pytest.approx(bce_by_definition(logits, binary))
    # not the soft-target BCE the targets would give unbinarised
    assert loss.item() != pytest.approx(bce_by_definition(logits, mixed))
    # torch's BCEWithLogitsLoss (the official criterion) on gt(0.0)
    official = torch.nn.BCEWithLogitsLoss()(logits, mixed.gt(0.0).double())
    torch.testing.assert_close(loss, official)


def test_hard_labels_threshold_and_weight():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    labels = torch.tensor([2, 0])
    onehot = torch.tensor([[0., 0., 1.], [1., 0., 0.]])
    loss = BinarizedBCELoss(loss_weight=2.)(logits, labels)
    assert loss.item() == pytest.approx(
        2 * bce_by_definition(logits, onehot), rel=1e-6)
    # a class counts only above the threshold
    soft = torch.tensor([[0.1, 0.0, 0.9], [0.6, 0.4, 0.0]])
    got = BinarizedBCELoss(threshold=0.5)(logits, soft)
    want = bce_by_definition(logits, torch.tensor([[0., 0., 1.], [1., 0.,
                                                                  0.]]))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_bad_shapes():
    loss = BinarizedBCELoss()
    with pytest.raises(ValueError, match='cls_score'):
        loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match='label shape'):
        loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_in_an_mmpretrain_head():
    """LinearClsHead passes avg_factor=B; the loss stays the element mean."""
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    assert MODELS.get('BinarizedBCELoss') is BinarizedBCELoss
    head = PRETRAIN_MODELS.build(
        dict(
            type='LinearClsHead',
            num_classes=5,
            in_channels=3,
            loss=dict(type='visionllama_mm.BinarizedBCELoss')))
    feats = (torch.randn(2, 3), )
    scores = torch.tensor([[0.7, 0.3, 0., 0., 0.], [0., 0., 0., 0.2, 0.8]])
    samples = [DataSample().set_gt_score(s) for s in scores]
    got = head.loss(feats, samples)['loss']
    logits = head(feats)
    want = bce_by_definition(logits.detach(), (scores > 0).float())
    assert got.item() == pytest.approx(want, rel=1e-6)

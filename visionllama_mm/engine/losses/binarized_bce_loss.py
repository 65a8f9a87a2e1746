"""``BinarizedBCELoss``: the DeiT-III BCE on binarised mixed targets.

The DeiT-III recipe (``--bce-loss`` of the deit engine the VisionLLaMA plain
models were trained with) mixes the one-hot targets with Mixup / CutMix and
then binarises them, ``targets.gt(0.0)``: every class present in the mixed
image gets target 1, so the objective is a multi-label BCE, not a soft one.
It is averaged over all B x C elements (``torch.nn.BCEWithLogitsLoss()``).
mmpretrain's ``CrossEntropyLoss(use_sigmoid=True)`` takes the soft targets
as they are and divides the sum by B (the head's ``avg_factor``), which is
another objective (1000 x larger, other targets).
"""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from visionllama_mm.registry import MODELS

__all__ = ['BinarizedBCELoss']


@MODELS.register_module()
class BinarizedBCELoss(nn.Module):
    """Mean BCE with logits against ``target > threshold`` (DeiT-III).

    ``loss = mean_{b, c} BCEWithLogits(score[b, c], 1[target[b, c] > t])``,
    times ``loss_weight``. Hard labels (shape (B,)) are one-hot encoded
    first, so the loss is also the plain multi-label BCE without Mixup.

    Args:
        threshold (float): A class is positive where its (mixed) target is
            above this value; 0 is the official ``targets.gt(0.0)``.
            Defaults to 0.
        loss_weight (float): Multiplier of the loss. Defaults to 1.
    """

    def __init__(self, threshold: float = 0., loss_weight: float = 1.) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.loss_weight = float(loss_weight)

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                avg_factor: Optional[int] = None,
                **kwargs) -> Tensor:
        """Loss of (B, C) logits against (B,) labels or (B, C) scores.

        ``avg_factor`` (passed by mmpretrain heads) is ignored: the official
        loss is the mean over all elements.
        """
        if cls_score.dim() != 2:
            raise ValueError('cls_score must be (B, C), got shape '
                             f'{tuple(cls_score.shape)}')
        if label.dim() == 1:
            label = F.one_hot(label.long(), cls_score.size(1))
        if label.shape != cls_score.shape:
            raise ValueError(f'label shape {tuple(label.shape)} does not '
                             f'match cls_score {tuple(cls_score.shape)}')
        target = (label > self.threshold).to(cls_score.dtype)
        loss = F.binary_cross_entropy_with_logits(
            cls_score, target, reduction='mean')
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'threshold={self.threshold}, loss_weight={self.loss_weight}'

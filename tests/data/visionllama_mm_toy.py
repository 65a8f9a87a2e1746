"""A tiny deterministic task for the foundation tests (not shipped).

``ToyClassifier`` is a two-layer MLP, ``ToyDataset`` holds fixed random
vectors whose labels follow a fixed linear rule, ``ToyAccuracy`` is a
plain accuracy metric and ``ToyInterruptHook`` stops training after an epoch
as if the job had been killed there. They register into visionllama_mm's
registries, so configs name them ``visionllama_mm.Toy*``. The tests put
``tests/data`` on ``PYTHONPATH`` so that ``custom_imports`` finds this
module.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from visionllama_mm.registry import DATASETS, HOOKS, METRICS, MODELS


@MODELS.register_module(force=True)
class ToyClassifier(BaseModel):
    """MLP classifier on vectors.

    Args:
        in_dim (int): Input size. Defaults to 8.
        hidden (int): Hidden size. Defaults to 16.
        num_classes (int): Number of classes. Defaults to 3.
    """

    def __init__(self,
                 in_dim: int = 8,
                 hidden: int = 16,
                 num_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes))

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.net(inputs)
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        if mode == 'predict':
            preds = logits.argmax(dim=1)
            return [
                dict(pred=int(p), label=int(t)) for p, t in zip(preds, labels)
            ]
        return logits


@DATASETS.register_module(force=True)
class ToyDataset(Dataset):
    """Fixed random vectors with labels from a fixed linear rule.

    Splits differ in ``seed`` (the inputs) and share the rule.

    Args:
        num_samples (int): Dataset length. Defaults to 24.
        in_dim (int): Vector size. Defaults to 8.
        num_classes (int): Number of classes. Defaults to 3.
        seed (int): Seed of the data generator. Defaults to 0.
    """

    def __init__(self,
                 num_samples: int = 24,
                 in_dim: int = 8,
                 num_classes: int = 3,
                 seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(num_samples, in_dim, generator=gen)
        # the labelling rule is the same for every split
        rule = torch.randn(
            in_dim, num_classes, generator=torch.Generator().manual_seed(99))
        self.labels = (self.inputs @ rule).argmax(dim=1)
        self.metainfo = dict(classes=tuple(map(str, range(num_classes))))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.inputs[index], labels=self.labels[index])


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):
    """Top-1 accuracy in percent of ``ToyClassifier`` predictions."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            self.results.append(float(sample['pred'] == sample['label']))

    def compute_metrics(self, results: list) -> dict:
        return dict(accuracy=100.0 * sum(results) / max(len(results), 1))


@HOOKS.register_module(force=True)
class ToyInterruptHook(Hook):
    """Stop training after ``epoch`` epochs, config unchanged.

    Args:
        epoch (int): The last epoch to run. Defaults to 2.
    """

    priority = 'LOWEST'

    def __init__(self, epoch: int = 2) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 >= self.epoch:  # runner.epoch is 0-based here
            runner.train_loop.stop_training = True

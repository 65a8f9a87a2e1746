"""A hook for the FSDP tests (not shipped): the loss of every iteration
averaged over the ranks, written by rank 0 to ``<work_dir>/global_loss.json``
lines ``{"iter": i, "loss": x}``. mmengine logs rank 0's own loss only;
the average over ranks of equal batches is the loss a one-process run on
the union of the batches computes."""
import json
import os.path as osp

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook

from visionllama_mm.registry import HOOKS


@HOOKS.register_module(force=True)
class GlobalLossRecorder(Hook):
    """Append the rank-averaged training loss of each iteration."""

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        loss = torch.as_tensor(outputs['loss'], dtype=torch.float64).clone()
        all_reduce(loss, op='mean')
        if is_main_process():
            with open(osp.join(runner.work_dir, 'global_loss.json'), 'a') as f:
                f.write(
                    json.dumps(dict(iter=runner.iter + 1, loss=loss.item())) +
                    '\n')

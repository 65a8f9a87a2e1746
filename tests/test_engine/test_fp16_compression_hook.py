"""Fp16CompressionHook: no-op without DDP, fp16 comm hook with DDP."""
import os
import tempfile
import unittest
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.runner import Runner

from visionllama_mm.engine import Fp16CompressionHook, Fp16CompresssionHook
from visionllama_mm.registry import HOOKS


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=(out - torch.stack(labels)).pow(2).mean())
        return out


class ToyDataset(torch.utils.data.Dataset):
    metainfo = dict()

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.ones(2) * i, labels=torch.ones(1))


class TestFp16CompressionHook(unittest.TestCase):

    def test_registered_under_both_names(self):
        self.assertIs(HOOKS.get('Fp16CompressionHook'), Fp16CompressionHook)
        self.assertIs(HOOKS.get('Fp16CompresssionHook'), Fp16CompressionHook)
        self.assertIs(Fp16CompresssionHook, Fp16CompressionHook)
        self.assertIs(
            MMENGINE_HOOKS.get('visionllama_mm.Fp16CompresssionHook'),
            Fp16CompressionHook)

    def test_non_distributed_runner_is_noop(self):
        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(
                model=ToyModel(),
                work_dir=tmp,
                train_dataloader=dict(
                    dataset=ToyDataset(),
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    batch_size=2,
                    num_workers=0),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                train_cfg=dict(by_epoch=False, max_iters=2),
                custom_hooks=[
                    dict(type='visionllama_mm.Fp16CompresssionHook')
                ],
                default_hooks=dict(checkpoint=None),
                experiment_name='fp16_hook_noop')
            self.assertTrue(
                any(isinstance(h, Fp16CompressionHook) for h in runner.hooks))
            with self.assertLogs(runner.logger, level='INFO') as cm:
                runner.train()
        text = '\n'.join(cm.output)
        self.assertIn('not a distributed run', text)
        self.assertNotIsInstance(runner.model,
                                 nn.parallel.DistributedDataParallel)

    def test_registers_comm_hook_with_ddp(self):
        if not dist.is_available() or not dist.is_gloo_available():
            self.skipTest('torch.distributed with gloo is not available')
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group(
                'gloo',
                init_method='file://' + os.path.join(tmp, 'rendezvous'),
                rank=0,
                world_size=1)
            try:
                model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
                logger = MMLogger.get_instance('fp16_hook_ddp')
                runner = SimpleNamespace(
                    model=model, cfg=dict(), logger=logger)
                with self.assertLogs(logger, level='INFO') as cm:
                    Fp16CompressionHook().before_train(runner)
                self.assertIn('fp16_compress_hook', '\n'.join(cm.output))
                x = torch.randn(8, 4)
                model(x).sum().backward()
                ref = nn.Linear(4, 2)
                ref.load_state_dict(model.module.state_dict())
                ref(x).sum().backward()
                # gradients went through an fp16 all-reduce
                torch.testing.assert_close(
                    model.module.weight.grad,
                    ref.weight.grad.half().float(),
                    atol=1e-3,
                    rtol=1e-3)
                # a custom wrapper config leaves DDP alone
                runner.cfg = dict(model_wrapper_cfg=dict(type='X'))
                with self.assertLogs(logger, level='INFO') as cm:
                    Fp16CompressionHook().before_train(runner)
                self.assertIn('model_wrapper_cfg', '\n'.join(cm.output))
            finally:
                dist.destroy_process_group()


if __name__ == '__main__':
    unittest.main()

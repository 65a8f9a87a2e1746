"""``Fp16CompressionHook``: fp16 gradient compression for DDP all-reduce.

ViTDet recipes halve the gradient traffic by registering PyTorch's
``fp16_compress_hook`` as the DDP communication hook. mmdet ships the hook
only in ``projects/ViTDet`` (not in the wheel); this is a re-implementation
(docs/openmmlab.md#fp16compressionhook). It is registered under its name and
under the upstream misspelling ``Fp16CompresssionHook`` so that upstream
configs work unchanged.
"""
from mmengine.dist import is_distributed
from mmengine.hooks import Hook
from torch.nn.parallel import DistributedDataParallel

from visionllama_mm.registry import HOOKS

__all__ = ['Fp16CompressionHook', 'Fp16CompresssionHook']


@HOOKS.register_module()
class Fp16CompressionHook(Hook):
    """Compress DDP gradients to fp16 before they are all-reduced.

    In ``before_train`` the hook registers
    ``torch.distributed.algorithms.ddp_comm_hooks.default.fp16_compress_hook``
    on ``runner.model`` when training is distributed, the model is wrapped
    in (a subclass of) ``DistributedDataParallel`` and the config sets no
    custom ``model_wrapper_cfg``. Otherwise it does nothing. Either way it
    logs once what it did.
    """

    priority = 'NORMAL'

    def before_train(self, runner) -> None:
        if not is_distributed():
            runner.logger.info('Fp16CompressionHook: not a distributed run, '
                               'gradients are not compressed.')
            return
        if runner.cfg.get('model_wrapper_cfg') is not None:
            runner.logger.info('Fp16CompressionHook: a custom '
                               'model_wrapper_cfg is set, leaving DDP '
                               'communication unchanged.')
            return
        if not isinstance(runner.model, DistributedDataParallel):
            runner.logger.info(
                'Fp16CompressionHook: the model is wrapped in '
                f'{type(runner.model).__name__}, not DistributedDataParallel;'
                ' gradients are not compressed.')
            return
        from torch.distributed.algorithms.ddp_comm_hooks import \
            default as comm_hooks
        runner.model.register_comm_hook(
            state=None, hook=comm_hooks.fp16_compress_hook)
        runner.logger.info('Fp16CompressionHook: DDP gradients are '
                           'all-reduced in fp16 (fp16_compress_hook).')


# The upstream configs spell the type with three "s".
Fp16CompresssionHook = Fp16CompressionHook
HOOKS.register_module(name='Fp16CompresssionHook', module=Fp16CompressionHook)

"""Optimizer constructor of LLaMA-Adapter V2
(docs/llama_adapter_v2.md#phases-and-trainable-groups).

Only the trainable parameters of the model's phase enter the optimizer
(a 7B model has ~300 frozen tensors that mmengine's default constructor
would log one by one). Weight decay follows the released code: none for
1-D parameters and biases, full decay for the 4-D gates and the embeddings.
In the ``'joint'`` phase every group is tagged with its side (``'visual'``
or ``'language'``) and may get its own learning-rate multiplier. Under FSDP
(``FSDPStrategy`` with ``use_orig_params=True``) the frozen LLaMA stays
sharded and out of the optimizer; names and dimensions are those of the
unwrapped model (:func:`visionllama_mm.engine.fsdp.original_ndims`).
"""
from typing import Optional

from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS

from visionllama_mm.engine.fsdp import original_ndims, unwrapped_name
from visionllama_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ['LLaMAAdapterV2OptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LLaMAAdapterV2OptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups for LLaMA-Adapter V2.

    ``paramwise_cfg`` keys:

    - ``side_lr_mult`` (dict): learning-rate multipliers per side, e.g.
      ``dict(visual=1.0, language=10.0)``. Defaults to 1 for both.
    - ``no_decay_1d`` (bool): no weight decay for 1-D parameters and biases
      (the released rule). Defaults to True.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config.
        paramwise_cfg (dict, optional): See above. Defaults to None.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        self.side_lr_mult = dict(paramwise_cfg.pop('side_lr_mult', {}))
        self.no_decay_1d = paramwise_cfg.pop('no_decay_1d', True)
        bad = set(self.side_lr_mult) - {'visual', 'language'}
        if bad:
            raise ValueError("side_lr_mult keys must be 'visual' or "
                             f"'language', got {sorted(bad)}")
        if paramwise_cfg:
            raise ValueError('unsupported paramwise_cfg keys for '
                             'LLaMAAdapterV2OptimWrapperConstructor: '
                             f'{sorted(paramwise_cfg)}')
        super().__init__(optim_wrapper_cfg, None)

    def __call__(self, model) -> OptimWrapper:
        ndims = original_ndims(model)
        if is_model_wrapper(model):
            model = model.module
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        joint = getattr(model, 'phase', None) == 'joint' and hasattr(
            model, 'param_side')
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            name = unwrapped_name(name)
            decay = not (self.no_decay_1d and
                         (ndims[id(param)] <= 1 or name.endswith('.bias')))
            side = model.param_side(name) if joint else None
            groups.setdefault((side, decay), []).append(param)
        if not groups:
            raise ValueError('the model has no trainable parameter (phase '
                             f'{getattr(model, "phase", "?")!r})')
        param_groups = []
        for (side, decay), params in groups.items():
            group = dict(params=params)
            if self.base_wd is not None:
                group['weight_decay'] = self.base_wd if decay else 0.0
            if side is not None:
                group['side'] = side
                group['lr'] = self.base_lr * self.side_lr_mult.get(side, 1.0)
            param_groups.append(group)
        optimizer_cfg['params'] = param_groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(
            wrapper_cfg, default_args=dict(optimizer=optimizer))

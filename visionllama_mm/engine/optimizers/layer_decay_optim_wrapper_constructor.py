"""Layer-wise learning-rate decay for any model whose backbone reports depths.

One constructor serves mmpretrain, mmseg and mmdet
(docs/visionllama.md#layer-wise-lr-decay). It asks the model, never class
names, how deep each parameter sits:

* ``model.backbone.get_layer_depth(name, prefix='backbone.')`` when the model
  has a backbone with that method (mmseg ``EncoderDecoder``, mmdet detectors,
  mmpretrain classifiers);
* ``model.get_layer_depth(name)`` otherwise.

Either returns ``(depth, num_layers)``; the parameter gets the learning rate
``lr * layer_decay_rate ** (num_layers - 1 - depth)``. For the plain
VisionLLaMA with L layers ``num_layers = L + 2``: patch embed (depth 0) gets
``rate ** (L + 1)``, layer i gets ``rate ** (L - i)`` and the heads get 1.

``paramwise_cfg`` keys:

* ``layer_decay_rate`` (alias ``decay_rate``, as in the upstream mmseg/mmdet
  configs): the decay rate. Defaults to 1 (no decay).
* ``decay_type``: only ``'layer_wise'``.
* ``num_layers`` (optional): the number of layers L the config expects; it
  must equal the backbone's (its ``num_layers - 2``), else ``ValueError``.
* ``custom_keys``: ``{substring: dict(lr_mult=..., decay_mult=...)}``; the
  longest matching key wins (mmengine order) and overrides the decay rule.
* ``no_decay_rule``:

  - ``'upstream'`` (default; the seg/det recipes): weight decay 0 for every
    parameter with ``ndim == 1`` or a name ending in ``.bias``;
  - ``'mmpretrain'``: mmpretrain's ``LearningRateDecayOptimWrapperConstructor``
    semantics (``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult``,
    all optional; the fine-tune recipe).

Parameters are merged into one group per (depth, weight decay, lr) and the
group table is logged through ``MMLogger``.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm

from visionllama_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from visionllama_mm.utils import check_choice

__all__ = ['LayerDecayOptimWrapperConstructor', 'NO_DECAY_RULES']

NO_DECAY_RULES = ('upstream', 'mmpretrain')
DECAY_TYPES = ('layer_wise', )
_OUR_KEYS = ('layer_decay_rate', 'decay_rate', 'decay_type', 'num_layers',
             'no_decay_rule')
_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def layer_depth_fn(model: nn.Module) -> Callable[[str], Tuple[int, int]]:
    """The ``name -> (depth, num_layers)`` function of a model.

    Args:
        model (nn.Module): The (unwrapped) model.

    Returns:
        Callable: Maps a full parameter name of ``model`` to its depth and
        the number of depths.
    """
    backbone = getattr(model, 'backbone', None)
    if callable(getattr(backbone, 'get_layer_depth', None)):
        return lambda name: backbone.get_layer_depth(name, prefix='backbone.')
    if callable(getattr(model, 'get_layer_depth', None)):
        return model.get_layer_depth
    raise NotImplementedError(
        'Layer-wise lr decay needs `model.backbone.get_layer_depth(name, '
        'prefix)` or `model.get_layer_depth(name)`; '
        f'{type(model).__name__} (backbone: {type(backbone).__name__}) has '
        'neither.')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay.

    See the module docstring for the ``paramwise_cfg`` keys.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config (``type``,
            ``optimizer`` with ``lr`` and optionally ``weight_decay``, ...).
        paramwise_cfg (dict, optional): Layer-decay and weight-decay options.
            Defaults to None (rate 1, ``'upstream'`` weight-decay rule).
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        cfg = dict(paramwise_cfg or {})
        rate = cfg.pop('layer_decay_rate', None)
        alias = cfg.pop('decay_rate', None)
        if rate is not None and alias is not None and rate != alias:
            raise ValueError('paramwise_cfg sets layer_decay_rate='
                             f'{rate} and its alias decay_rate={alias}; '
                             'give one of them')
        rate = float(
            rate if rate is not None else (alias if alias is not None else 1.))
        if not rate > 0:
            raise ValueError(f'layer_decay_rate must be > 0, got {rate}')
        decay_type = cfg.pop('decay_type', 'layer_wise')
        check_choice('decay_type', decay_type, DECAY_TYPES)
        rule = cfg.pop('no_decay_rule', 'upstream')
        check_choice('no_decay_rule', rule, NO_DECAY_RULES)
        num_layers = cfg.pop('num_layers', None)
        if num_layers is not None and (not isinstance(num_layers, int)
                                       or num_layers < 0):
            raise ValueError('num_layers must be a non-negative int, got '
                             f'{num_layers!r}')
        if rule == 'upstream':
            extra = [
                k for k in ('bias_decay_mult', 'norm_decay_mult',
                            'flat_decay_mult') if k in cfg
            ]
            if extra:
                raise ValueError(
                    f'{extra} only apply with no_decay_rule="mmpretrain"; '
                    'the "upstream" rule already sets weight decay 0 for '
                    '1-D parameters and biases')
        super().__init__(optim_wrapper_cfg, cfg)
        self.layer_decay_rate = rate
        self.decay_type = decay_type
        self.no_decay_rule = rule
        self.num_layers = num_layers
        # Never empty, so DefaultOptimWrapperConstructor.__call__ always
        # goes through add_params.
        self.paramwise_cfg.update(
            layer_decay_rate=rate, decay_type=decay_type, no_decay_rule=rule)

    # ------------------------------------------------------------------
    def _weight_decay(self, name: str, param: nn.Parameter,
                      module: nn.Module) -> Optional[float]:
        if self.base_wd is None:
            return None
        if self.no_decay_rule == 'upstream':
            if param.ndim == 1 or name.endswith('.bias'):
                return 0.
            return self.base_wd
        cfg = self.paramwise_cfg
        leaf = name.rsplit('.', 1)[-1]
        if isinstance(module,
                      _NORM_TYPES) and cfg.get('norm_decay_mult') is not None:
            return self.base_wd * cfg['norm_decay_mult']
        if leaf == 'bias' and cfg.get('bias_decay_mult') is not None:
            return self.base_wd * cfg['bias_decay_mult']
        if param.ndim == 1 and cfg.get('flat_decay_mult') is not None:
            return self.base_wd * cfg['flat_decay_mult']
        return self.base_wd

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   **kwargs) -> None:
        """Append the parameter groups of ``module`` to ``params``.

        Args:
            params (list[dict]): Parameter groups, extended in place.
            module (nn.Module): The model (wrappers are unwrapped).
            prefix (str): Name prefix of ``module``'s parameters. Defaults
                to ''.
        """
        if is_model_wrapper(module):
            module = module.module
        depth_of = layer_depth_fn(module)
        custom_keys: Dict[str,
                          dict] = self.paramwise_cfg.get('custom_keys', {})
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)

        groups: 'OrderedDict[tuple, dict]' = OrderedDict()
        seen = set()
        max_id = None
        for mod_name, mod in module.named_modules():
            for leaf, param in mod.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                name = f'{mod_name}.{leaf}' if mod_name else leaf
                layer_id, num_ids = depth_of(name)
                if max_id is None:
                    max_id = num_ids
                    self._check_num_layers(num_ids)
                scale = self.layer_decay_rate**(num_ids - 1 - layer_id)
                wd = self._weight_decay(name, param, mod)
                lr_mult = 1.
                key = next((k for k in sorted_keys if k in name), None)
                if key is not None:
                    lr_mult = custom_keys[key].get('lr_mult', 1.)
                    if wd is not None and 'decay_mult' in custom_keys[key]:
                        wd = self.base_wd * custom_keys[key]['decay_mult']
                lr = self.base_lr * scale * lr_mult
                gkey = (layer_id, wd, lr)
                if gkey not in groups:
                    decay = 'no_decay' if not wd else 'decay'
                    group = dict(
                        params=[],
                        lr=lr,
                        lr_scale=scale * lr_mult,
                        layer_id=layer_id,
                        group_name=f'layer_{layer_id}_{decay}',
                        names=[])
                    if wd is not None:
                        group['weight_decay'] = wd
                    groups[gkey] = group
                groups[gkey]['params'].append(param)
                groups[gkey]['names'].append(prefix + name)
        params.extend(groups.values())
        self._log(list(groups.values()), max_id)
        for group in groups.values():
            group.pop('names')

    def _check_num_layers(self, num_ids: int) -> None:
        if self.num_layers is not None and self.num_layers != num_ids - 2:
            raise ValueError(
                f'paramwise_cfg.num_layers={self.num_layers} but the backbone '
                f'reports {num_ids - 2} layers (get_layer_depth returns '
                f'num_layers={num_ids} = layers + 2)')

    def _log(self, groups: List[dict], max_id: Optional[int]) -> None:
        lines = [
            f'LayerDecayOptimWrapperConstructor: layer_decay_rate='
            f'{self.layer_decay_rate}, num_layers={max_id}, '
            f'no_decay_rule={self.no_decay_rule!r}, {len(groups)} groups',
            f'{"group":<22}{"layer":>6}{"lr_scale":>12}{"lr":>12}'
            f'{"wd":>8}{"#params":>9}  first parameters'
        ]
        for g in groups:
            wd = g.get('weight_decay')
            names = ', '.join(g['names'][:3])
            if len(g['names']) > 3:
                names += ', ...'
            lines.append(f'{g["group_name"]:<22}{g["layer_id"]:>6}'
                         f'{g["lr_scale"]:>12.4g}{g["lr"]:>12.4g}'
                         f'{"-" if wd is None else format(wd, ".3g"):>8}'
                         f'{len(g["params"]):>9}  {names}')
        MMLogger.get_current_instance().info('\n'.join(lines))

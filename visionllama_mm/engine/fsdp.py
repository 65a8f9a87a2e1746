"""Pieces that let mmengine's ``FSDPStrategy`` shard our models.

Sharded training uses mmengine's own ``FlexibleRunner`` with
``FSDPStrategy`` (``runner_type='FlexibleRunner'``, ``strategy=dict(...)``,
see ``configs/_base_/strategies/``); this module only adds what a config
cannot name by itself:

* :func:`llama_block_wrap_policy`: the FSDP auto-wrap policy that makes one
  FSDP unit of every transformer block of this package (the VisionLLaMA
  blocks of the plain, pyramid, ViTDet and MAE models, the DiT/SiT
  ``LLaMABlock``, the adapter's visual blocks, and transformers'
  ``LlamaDecoderLayer`` and ``CLIPEncoderLayer`` for the adapter's LLaMA
  and CLIP). A block is the natural unit: its parameters are
  gathered just before it runs and freed right after.
* :func:`is_llama_block`: the same test as a ``check_fn`` for the strategy's
  ``activation_checkpointing`` (recompute each block in backward).
* :func:`unwrapped_name` and :func:`original_ndims`: parameter names and
  shapes as the unwrapped model has them. mmengine builds the optimizer
  after wrapping, and with ``use_orig_params=True`` FSDP keeps the original
  parameter objects but, outside forward, shows them as flat 1-D views of
  the local shard, under names with ``_fsdp_wrapped_module.`` inserted;
  optimizer constructors whose rules read names or ``ndim`` use these.

Both are registered in mmengine's ``FUNCTIONS`` registry (scope
``visionllama_mm``), which is where ``MMFullyShardedDataParallel`` and
``FSDPStrategy`` look up ``auto_wrap_policy`` and ``check_fn`` given as
strings or dicts.

The block classes are imported lazily (the generation and multimodal
sub-packages are heavy and transformers is optional).
"""
from importlib import import_module
from typing import Dict, Optional, Sequence, Tuple

from torch import nn

from visionllama_mm.registry import FUNCTIONS

__all__ = [
    'BLOCK_TYPES', 'block_classes', 'llama_block_wrap_policy',
    'is_llama_block', 'unwrapped_name', 'original_ndims'
]

# prefixes that FSDP and activation checkpointing insert into names
_WRAPPER_PREFIXES = ('_fsdp_wrapped_module.', '_checkpoint_wrapped_module.')

#: Dotted names of the block classes that become FSDP units by default.
BLOCK_TYPES = (
    'visionllama_mm.layers.blocks.VisionLLaMABlock',
    'visionllama_mm.layers.blocks.LayerScaleBlock',
    'visionllama_mm.generation.models.LLaMABlock',
    'visionllama_mm.multimodal.llama_adapter_v2.visual.VisualBlock',
    'transformers.models.llama.modeling_llama.LlamaDecoderLayer',
    'transformers.models.clip.modeling_clip.CLIPEncoderLayer',
)

# dotted names -> classes, one entry per distinct tuple of names
_RESOLVED: dict = {}


def block_classes(names: Optional[Sequence[str]] = None) -> Tuple[type, ...]:
    """Classes named by ``names`` (default :data:`BLOCK_TYPES`).

    Names whose module cannot be imported (transformers not installed) are
    skipped; a name that imports but lacks the class is an error.

    Args:
        names (Sequence[str], optional): Dotted class names.

    Returns:
        tuple[type, ...]: The classes.
    """
    key = tuple(BLOCK_TYPES if names is None else names)
    if key not in _RESOLVED:
        classes = []
        for name in key:
            if not isinstance(name, str) or '.' not in name:
                raise ValueError(
                    f'block_types entries must be dotted class names such as '
                    f'{BLOCK_TYPES[0]!r}, got {name!r}')
            module_name, _, cls_name = name.rpartition('.')
            try:
                module = import_module(module_name)
            except ImportError:
                continue
            cls = getattr(module, cls_name, None)
            if not isinstance(cls, type):
                raise ValueError(f'{module_name} has no class {cls_name!r} '
                                 f'(block_types entry {name!r})')
            classes.append(cls)
        _RESOLVED[key] = tuple(classes)
    return _RESOLVED[key]


@FUNCTIONS.register_module()
def llama_block_wrap_policy(module: nn.Module,
                            recurse: bool,
                            nonwrapped_numel: int,
                            block_types: Optional[Sequence[str]] = None
                            ) -> bool:
    """FSDP auto-wrap policy: one FSDP unit per block.

    Use in a config as ``auto_wrap_policy=dict(
    type='visionllama_mm.llama_block_wrap_policy')``, optionally with
    ``block_types=[...]`` (dotted class names) to choose other units.

    Args:
        module (nn.Module): The candidate module.
        recurse (bool): FSDP asks whether to descend into ``module``.
        nonwrapped_numel (int): Parameters not yet wrapped (unused).
        block_types (Sequence[str], optional): Dotted names of the classes
            to wrap. Defaults to :data:`BLOCK_TYPES`.

    Returns:
        bool: Always True when ``recurse``; otherwise whether ``module`` is
        a block.
    """
    if recurse:
        return True
    return isinstance(module, block_classes(block_types))


@FUNCTIONS.register_module()
def is_llama_block(module: nn.Module) -> bool:
    """``check_fn`` for activation checkpointing: True for the blocks of
    :data:`BLOCK_TYPES` (``activation_checkpointing=dict(
    check_fn='visionllama_mm.is_llama_block')`` in ``FSDPStrategy``)."""
    return isinstance(module, block_classes())


def unwrapped_name(name: str) -> str:
    """``name`` without the FSDP / activation-checkpointing wrapper parts
    (the parameter's name in the unwrapped model)."""
    for part in _WRAPPER_PREFIXES:
        name = name.replace(part, '')
    return name


def original_ndims(model: nn.Module) -> Dict[int, int]:
    """``id(param) -> ndim`` of the unsharded parameters of ``model``.

    For an FSDP model (``use_orig_params=True``) the full parameters are
    gathered once (a collective: call it on every rank); other models are
    read directly.

    Args:
        model (nn.Module): The model, FSDP-wrapped or not.

    Returns:
        dict[int, int]: Number of dimensions by parameter id.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    if not any(isinstance(m, FSDP) for m in model.modules()):
        return {id(p): p.ndim for p in model.parameters()}
    with FSDP.summon_full_params(model, writeback=False):
        return {id(p): p.ndim for p in model.parameters()}

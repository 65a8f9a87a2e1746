"""Checkpoint hooks of LLaMA-Adapter V2: our names <-> the official layout.

:class:`~.llama_adapter_v2.LLaMAAdapterV2` wraps transformers' Llama, but its
state dicts use the official LLaMA-Adapter names in Meta's layout (see
:mod:`.checkpoint`), so released adapter files load directly and files we
save load in the released code:

* :func:`adapter_state_dict_hook` (state-dict post hook) keeps only the
  adapter-side tensors, renamed and row-permuted by
  :func:`reduce_to_adapter_state`;
* :func:`official_load_pre_hook` (load pre hook) maps official names and
  layout back to ours and checks shapes, with messages that name the likely
  cause (another LLaMA size, another CLIP);
* :func:`quiet_frozen_missing_hook` (load post hook) drops the frozen CLIP /
  LLaMA weights, which adapter files never hold, from the missing keys;
* :class:`LLaMAAdapterV2CheckpointHook` (runner hook) applies the same
  reduction to the gathered checkpoint of an FSDP run.

The module hooks are plain functions: torch marks hooks registered through
its public API with an attribute, which a bound method cannot carry.
"""
from mmengine.hooks import Hook
from mmengine.logging import print_log

from visionllama_mm.registry import HOOKS
from .checkpoint import (hf_to_meta_rows, is_frozen_base, meta_to_hf_rows,
                         needs_row_permutation, official_layer_index,
                         official_to_hf_key)

__all__ = [
    'adapter_state_dict_hook', 'reduce_to_adapter_state',
    'official_load_pre_hook', 'quiet_frozen_missing_hook',
    'LLaMAAdapterV2CheckpointHook'
]


def adapter_state_dict_hook(module, state_dict, prefix, local_metadata):
    """Keep only adapter-side tensors, under the official names/layout.

    Under FSDP the state dict is left whole: FSDP's own hook on the root
    unit, which runs after this one, expects every tensor of the unit
    (e.g. the frozen token embedding); :class:`LLaMAAdapterV2CheckpointHook`
    then applies the same filter to the gathered checkpoint.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    if any(isinstance(m, FSDP) for m in module.modules()):
        return
    reduce_to_adapter_state(module, state_dict, prefix)


def reduce_to_adapter_state(module,
                            state_dict: dict,
                            prefix: str = '') -> dict:
    """Reduce a full state dict of ``module`` (an ``LLaMAAdapterV2``; our
    names, under ``prefix``) to the adapter-side tensors under the official
    names and layout, in place; returns ``state_dict``."""
    n_heads = module.num_heads
    n_kv = module.llama.config.num_key_value_heads
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        value = state_dict.pop(key)
        if rel.startswith('data_preprocessor.'):
            state_dict[key] = value
            continue
        official = module.official_name(rel)
        if official is None or is_frozen_base(official):
            continue
        if official.startswith('llama.'):
            kind = needs_row_permutation(official, module.bias_mode)
            if kind is not None:
                value = hf_to_meta_rows(value,
                                        n_heads if kind == 'q' else n_kv)
        state_dict[prefix + official] = value
    return state_dict


@HOOKS.register_module()
class LLaMAAdapterV2CheckpointHook(Hook):
    """Save only the adapter-side tensors of an FSDP-trained adapter.

    A plain or DDP model does this in its own state-dict hook; under FSDP
    that hook must leave the state dict whole (see
    :func:`adapter_state_dict_hook`), so this hook filters the gathered
    checkpoint before it is written (``before_save_checkpoint``, called by
    ``FlexibleRunner`` with the full state dict on rank 0). The checkpoint
    then holds what a replicated run saves. The FSDP configs of the adapter
    add it to ``custom_hooks``; it does nothing for other models and for
    already reduced state dicts.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        from .llama_adapter_v2 import LLaMAAdapterV2
        model = runner.model
        model = getattr(model, 'module', model)
        state = checkpoint.get('state_dict')
        if not isinstance(model, LLaMAAdapterV2) or not state:
            return
        frozen = 'llama.model.embed_tokens.weight'
        if frozen in state:
            checkpoint['state_dict'] = reduce_to_adapter_state(model, state)


def official_load_pre_hook(module, state_dict, prefix, local_metadata, strict,
                           missing_keys, unexpected_keys, error_msgs):
    """Map official names/layout to ours and check shapes
    (docs/llama_adapter_v2.md#checkpoints)."""
    # a released file given directly: {'model': {...}, 'config': {...}}
    if isinstance(state_dict.get(prefix + 'model'), dict):
        inner = state_dict.pop(prefix + 'model')
        config = state_dict.pop(prefix + 'config', None) or {}
        module._check_adapter_config(config, 'checkpoint')
        for k, v in inner.items():
            state_dict[prefix + k] = v
    own = dict(module.named_parameters())
    n_heads = module.num_heads
    n_kv = module.llama.config.num_key_value_heads
    dropped = 0
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        if rel.startswith('llma.'):
            rel = 'llama.' + rel[len('llma.'):]
        if rel.startswith('clip.') and rel not in own:
            # the official full checkpoints carry OpenAI CLIP weights; our
            # CLIP is loaded by its own builder
            state_dict.pop(key)
            dropped += 1
            continue
        value = state_dict[key]
        if rel.startswith(('llama.model.', 'llama.lm_head.')) or \
                not rel.startswith('llama.'):
            target = rel
        else:
            layer = official_layer_index(rel)
            if layer is not None and layer >= module.num_layers:
                raise ValueError(
                    f'{rel} belongs to layer {layer} but the LLaMA has '
                    f'{module.num_layers} layers; wrong LLaMA size?')
            if 'lora' in rel and not module.w_lora:
                raise ValueError(
                    f'{rel}: the checkpoint has LoRA weights but the model '
                    'was built with w_lora=False')
            hf = official_to_hf_key(rel[len('llama.'):])
            if hf is None:
                continue  # left for the unexpected-keys report
            target = 'llama.' + hf
            kind = needs_row_permutation(rel, module.bias_mode)
            if kind is not None and value.dim() >= 1:
                value = meta_to_hf_rows(value,
                                        n_heads if kind == 'q' else n_kv)
        param = own.get(target)
        if param is not None and tuple(param.shape) != tuple(value.shape):
            raise ValueError(_shape_message(module, rel, value, param))
        state_dict.pop(key)
        state_dict[prefix + target] = value
    if dropped:
        print_log(
            f'LLaMAAdapterV2: ignored {dropped} official CLIP tensors',
            logger='current')


def _shape_message(module, key, value, param) -> str:
    got, want = tuple(value.shape), tuple(param.shape)
    msg = f'{key} has shape {got} but the model expects {want}'
    if key == 'clip_proj.weight' and got[0] == want[0]:
        msg += (f': the checkpoint was trained on {got[1]}-d CLIP features '
                f'and this CLIP outputs {want[1]}-d ones (released '
                'LLaMA-Adapter V2 files need CLIP ViT-L/14, 768-d; 512-d is '
                'ViT-B)')
    elif key.startswith(('llama.', 'visual_proj', 'adapter_query')):
        msg += (f': the checkpoint was made for another LLaMA size (this '
                f'LLaMA has dim={module.dim}, {module.num_layers} layers; '
                'LLaMA-7B is 4096 / 32)')
    return msg


def quiet_frozen_missing_hook(module, incompatible_keys) -> None:
    """Frozen CLIP / LLaMA weights are not in adapter checkpoints."""
    missing = incompatible_keys.missing_keys
    own = dict(module.named_parameters())
    for key in list(missing):
        official = module.official_name(key) if key in own else None
        if key.startswith('clip.') or (official is not None
                                       and is_frozen_base(official)):
            missing.remove(key)

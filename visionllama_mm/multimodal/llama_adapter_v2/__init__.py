"""LLaMA-Adapter V2 (arXiv 2304.15010) for mmpretrain."""
from .adapter_layers import (AdapterLinear, AdapterLlamaAttention,
                             adapter_llama_forward, inject_adapters)
from .hooks import LLaMAAdapterV2CheckpointHook
from .llama_adapter_v2 import CLIP_MEAN, CLIP_STD, LLaMAAdapterV2
from .optim import LLaMAAdapterV2OptimWrapperConstructor
from .prompts import (CAPTION_INSTRUCTION, PROMPT_NO_INPUT,
                      PROMPT_SHORT_ANSWER, PROMPT_WITH_INPUT, format_prompt)

__all__ = [
    'LLaMAAdapterV2', 'LLaMAAdapterV2CheckpointHook',
    'LLaMAAdapterV2OptimWrapperConstructor', 'AdapterLinear',
    'AdapterLlamaAttention', 'inject_adapters', 'adapter_llama_forward',
    'format_prompt', 'PROMPT_NO_INPUT', 'PROMPT_WITH_INPUT',
    'PROMPT_SHORT_ANSWER', 'CAPTION_INSTRUCTION', 'CLIP_MEAN', 'CLIP_STD'
]

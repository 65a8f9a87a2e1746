"""Multimodal models (mmpretrain faces): LLaMA-Adapter V2."""
from .llama_adapter_v2 import *  # noqa: F401,F403
from .llama_adapter_v2 import __all__  # noqa: F401

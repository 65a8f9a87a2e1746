"""Self-supervised encoders (registered in ``visionllama_mm.registry``)."""
from .mae_llama import MAELLaMA

__all__ = ['MAELLaMA']

"""DiT-LLaMA / SiT-LLaMA: networks, diffusion and transport, mmagic face."""
from .diffusion import GaussianDiffusion, create_diffusion
from .mmagic_face import DiTLLaMAModel, FrozenVAE, SiTLLaMAModel
from .models import (DiTLLaMA, DiTLLaMA_models, SiTLLaMA, SiTLLaMA_models,
                     build_generator)
from .transport import Transport

__all__ = [
    'DiTLLaMA', 'SiTLLaMA', 'DiTLLaMA_models', 'SiTLLaMA_models',
    'build_generator', 'GaussianDiffusion', 'create_diffusion', 'Transport',
    'DiTLLaMAModel', 'SiTLLaMAModel', 'FrozenVAE'
]

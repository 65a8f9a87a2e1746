# DiT-LLaMA-B/4 on ImageNet 256 latents (official recipe, §6.3).
# Sampling (FID-50k): tools/sample.py with 250 respaced DDPM steps.
# The family config: the other sizes inherit it and change the arch.
_base_ = ['../_base_/imagenet256_latent_diffusion.py']

model = dict(
    type='visionllama_mm.DiTLLaMA',
    arch='DiTLLaMA_B_4',
    diffusion_steps=1000,
    sample_cfg=dict(num_steps=250, cfg_scale=1.5))

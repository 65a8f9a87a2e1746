# DiT-LLaMA-B/4 on ImageNet 256 latents (upstream DiTLLaMA.md: dit/train.py
# --model DiTLLaMA_B_4 on 8 GPUs, global batch 256, 400k iterations).
# Sampling (FID-50k): tools/sample.py with 250 respaced DDPM steps.
# Guidance 1.5: the paper's DiT-LLaMA FIDs are sampled with classifier-free
# guidance 1.5 (paper §4.1); the upstream DiTLLaMA.md sampling command
# passes --cfg-scale 1.0 (no guidance) and gives other FIDs.
# The family config: the other sizes inherit it and change the arch.
_base_ = ['../_base_/imagenet256_latent_diffusion.py']

model = dict(
    type='visionllama_mm.DiTLLaMA',
    arch='DiTLLaMA_B_4',
    diffusion_steps=1000,
    sample_cfg=dict(num_steps=250, cfg_scale=1.5))

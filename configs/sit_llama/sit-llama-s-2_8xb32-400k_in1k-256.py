# SiT-LLaMA-S/2 on ImageNet 256 latents (upstream SiTLLaMA.md recipe):
# linear interpolant, velocity prediction, no loss weighting.
# Sampling: SDE Euler-Maruyama (250 steps, diffusion form 'sigma', norm 1,
# last step 'Mean' of 0.04) or ODE dopri5 (atol 1e-6, rtol 1e-3).
# The family config: the other sizes inherit it and change the arch.
_base_ = ['../_base_/imagenet256_latent_diffusion.py']

model = dict(
    type='visionllama_mm.SiTLLaMA',
    arch='SiTLLaMA_S_2',
    transport=dict(path='linear', prediction='velocity'),
    sample_cfg=dict(
        mode='sde',
        num_steps=250,
        cfg_scale=1.0,
        diffusion_form='sigma',
        diffusion_norm=1.0,
        last_step='Mean',
        last_step_size=0.04))

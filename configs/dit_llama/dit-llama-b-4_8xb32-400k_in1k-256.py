# DiT-LLaMA-B/4 on ImageNet 256 latents (official recipe, §6.3).
# Sampling (FID-50k): tools/sample.py with 250 respaced DDPM steps.
_base_ = ['../_base_/imagenet256_latent_diffusion.py']

model = dict(
    type='visionllama_mm.DiTLLaMA',
    arch='DiTLLaMA_B_4',
    net_cfg=dict(
        input_size=32,  # 256 / 8 (SD-VAE latents)
        num_classes=1000,
        class_dropout_prob=0.1,
        learn_sigma=True,
        cfg_channels=3),  # official: guide 3 of the 4 latent channels
    diffusion_steps=1000,
    vae=dict(path={{_base_.vae_path}}, scale_factor=0.18215),
    sample_cfg=dict(num_steps=250, cfg_scale=1.5),
    data_preprocessor={{_base_.data_preprocessor}})

train_cfg = dict(max_iters=400000)

# A small DiT-LLaMA (1.1M; learned variance, hybrid loss) trained in pixel
# space on the 5k real MNIST digits (CPU, minutes; same network as the SiT
# quick start, defined in the base).
_base_ = ['../_base_/mnist5k_pixel.py']

model = dict(
    type='visionllama_mm.DiTLLaMA',
    arch=dict(learn_sigma=True),
    diffusion_steps=1000,
    sample_cfg=dict(num_steps=100, cfg_scale=2.0))

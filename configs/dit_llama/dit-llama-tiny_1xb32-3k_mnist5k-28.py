# A small DiT-LLaMA (1.1M; learned variance, hybrid loss) trained in pixel
# space on the 5k real MNIST digits (CPU, minutes; same network as the SiT
# quick start).
_base_ = ['../_base_/mnist5k_pixel.py']

model = dict(
    type='visionllama_mm.DiTLLaMA',
    arch=dict(
        input_size=28,
        patch_size=4,
        in_channels=1,
        hidden_size=96,
        depth=6,
        num_heads=3,
        num_classes=10,
        class_dropout_prob=0.1,
        learn_sigma=True,
        cfg_channels=None,
        # DEVIATION: RoPE alone is relative and cannot place the centred
        # digits from pure noise; add DiT's fixed sin-cos embedding.
        add_pos_embed=True),
    diffusion_steps=1000,
    sample_cfg=dict(num_steps=100, cfg_scale=2.0),
    data_preprocessor={{_base_.data_preprocessor}})

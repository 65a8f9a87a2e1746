# A small SiT-LLaMA (1.1M) trained in pixel space on the 5k real MNIST digits
# (3k iterations: 11 min measured on 2 cores shared with another job; final
# loss ~0.21). Sample a grid with tools/sample.py --labels 0 1 ... 9: a
# logistic regression of the real digits recognises ~98% of the samples as
# the requested digit.
# Same network as the DiT quick start, defined in the base.
_base_ = ['../_base_/mnist5k_pixel.py']

model = dict(
    type='visionllama_mm.SiTLLaMA',
    arch=dict(learn_sigma=False),
    transport=dict(path='linear', prediction='velocity'),
    sample_cfg=dict(mode='sde', num_steps=100, cfg_scale=2.0))

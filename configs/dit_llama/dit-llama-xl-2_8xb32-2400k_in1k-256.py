# DiT-LLaMA-XL/2 on ImageNet 256 latents (upstream DiTLLaMA.md recipe),
# trained for 2.4M iterations.
_base_ = ['./dit-llama-b-4_8xb32-400k_in1k-256.py']

model = dict(arch='DiTLLaMA_XL_2')

train_cfg = dict(max_iters=2400000)

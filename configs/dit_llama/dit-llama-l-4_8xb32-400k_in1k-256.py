# DiT-LLaMA-L/4 on ImageNet 256 latents (upstream DiTLLaMA.md recipe).
_base_ = ['./dit-llama-b-4_8xb32-400k_in1k-256.py']

model = dict(arch='DiTLLaMA_L_4')

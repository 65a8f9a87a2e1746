# SiT-LLaMA-L/2 on ImageNet 256 latents (upstream SiTLLaMA.md recipe).
_base_ = ['./sit-llama-s-2_8xb32-400k_in1k-256.py']

model = dict(arch='SiTLLaMA_L_2')

# SiT-LLaMA-L/2 on ImageNet 256 latents (official recipe, §6.3).
_base_ = ['./sit-llama-s-2_8xb32-400k_in1k-256.py']

model = dict(arch='SiTLLaMA_L_2')

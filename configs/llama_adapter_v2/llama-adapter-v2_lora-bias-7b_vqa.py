# LLaMA-Adapter V2 multimodal, released LORA-BIAS-7B adapter, VQAv2 (val).
_base_ = './llama-adapter-v2_bias-7b_vqa.py'

load_from = 'checkpoints/llama-adapter-v2_lora-bias-7b.pth'
model = dict(w_lora=True, lora_rank=16)

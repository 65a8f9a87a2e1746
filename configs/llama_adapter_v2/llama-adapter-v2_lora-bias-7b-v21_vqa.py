# LLaMA-Adapter V2.1 (released LORA-BIAS-7B-v21 adapter, also trained on
# VQAv2), VQAv2 (val). Greedy, 30 new tokens, short-answer template: the
# settings of the published MME evaluation
# (docs/llama_adapter_v2.md#evaluation-and-published-numbers).
_base_ = './llama-adapter-v2_bias-7b_vqa.py'

load_from = 'checkpoints/llama-adapter-v2_lora-bias-7b-v21.pth'
model = dict(w_lora=True, lora_rank=16)

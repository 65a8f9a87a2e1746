# LLaMA-Adapter V2 multimodal, released CAPTION-7B adapter, COCO caption.
_base_ = './llama-adapter-v2_bias-7b_caption.py'

load_from = 'checkpoints/llama-adapter-v2_caption-7b.pth'

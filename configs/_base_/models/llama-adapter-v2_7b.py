# LLaMA-Adapter V2 multimodal 7B: Meta LLaMA-7B and CLIP ViT-L/14 in fp16.
#
# Paths (edit them here, or override model.llm.meta_dir,
# model.tokenizer.name_or_path and model.vision_encoder.name_or_path with
# --cfg-options):
#   llama_dir      Meta LLaMA-7B: params.json + consolidated.00.pth
#   tokenizer_path LLaMA tokenizer.model
#   clip_dir       transformers CLIP ViT-L/14 (openai/clip-vit-large-patch14)
_base_ = './llama-adapter-v2.py'

llama_dir = 'data/llama/7B'
tokenizer_path = 'data/llama/tokenizer.model'
clip_dir = 'data/clip-vit-large-patch14'

model = dict(
    llm=dict(meta_dir=llama_dir, dtype='float16'),
    tokenizer=dict(name_or_path=tokenizer_path),
    vision_encoder=dict(name_or_path=clip_dir, dtype='float16'))

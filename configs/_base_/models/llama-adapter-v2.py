# LLaMA-Adapter V2 multimodal (visionllama_mm.LLaMAAdapterV2): a LLaMA
# tokenizer, a transformers CLIP vision encoder and CLIP's normalisation.
# The configs that inherit this name the LLaMA, tokenizer and CLIP files.
custom_imports = dict(
    imports=['visionllama_mm.safe_loading', 'visionllama_mm.multimodal'],
    allow_failed_imports=False)

model = dict(
    type='visionllama_mm.LLaMAAdapterV2',
    tokenizer=dict(type='LlamaTokenizer'),
    vision_encoder=dict(type='hf'),
    # the released models saw BGR images normalised with CLIP's RGB
    # statistics (docs/llama_adapter_v2.md#image-preprocessing); to_rgb=True
    # gives the "correct" colours but does not match the released weights
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        mean=[122.770938, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        to_rgb=False),
)

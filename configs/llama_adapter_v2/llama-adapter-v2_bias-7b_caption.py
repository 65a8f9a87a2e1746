# LLaMA-Adapter V2 multimodal, released BIAS-7B adapter, COCO caption.
#
# load_from: the adapter, converted with
# tools/model_converters/llama_adapter_v2_adapter.py. The LLaMA, tokenizer
# and CLIP paths are in ../_base_/models/llama-adapter-v2_7b.py.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/models/llama-adapter-v2_7b.py',
    '../_base_/datasets/llama-adapter-v2_coco-caption_test.py',
]

load_from = 'checkpoints/llama-adapter-v2_bias-7b.pth'

model = dict(
    phase='frozen',
    task='caption',
    fusion='late',
    bias_mode='mm7b',
    w_lora=False,
    query_len=10,
    query_layer=31,
    max_seq_len=512,
    # official sampling defaults; use temperature=0 for evaluation
    generation_cfg=dict(max_new_tokens=256, temperature=0.1, top_p=0.75))

test_dataloader = dict(persistent_workers=False)

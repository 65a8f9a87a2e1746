# LLaMA-Adapter V2 multimodal, released BIAS-7B adapter, COCO caption.
#
# Paths (edit or override with --cfg-options):
#   llama_dir      Meta LLaMA-7B: params.json + consolidated.00.pth
#   tokenizer_path LLaMA tokenizer.model
#   clip_dir       transformers CLIP ViT-L/14 (openai/clip-vit-large-patch14)
#   load_from      the adapter, converted with
#                  tools/model_converters/llama_adapter_v2_adapter.py
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(
    imports=['visionllama_mm', 'visionllama_mm.multimodal'],
    allow_failed_imports=False)

llama_dir = 'data/llama/7B'
tokenizer_path = 'data/llama/tokenizer.model'
clip_dir = 'data/clip-vit-large-patch14'
load_from = 'checkpoints/llama-adapter-v2_bias-7b.pth'

model = dict(
    type='visionllama_mm.LLaMAAdapterV2',
    llm=dict(meta_dir=llama_dir, dtype='float16'),
    tokenizer=dict(type='LlamaTokenizer', name_or_path=tokenizer_path),
    vision_encoder=dict(type='hf', name_or_path=clip_dir, dtype='float16'),
    phase='frozen',
    task='caption',
    fusion='late',
    bias_mode='mm7b',
    w_lora=False,
    query_len=10,
    query_layer=31,
    max_seq_len=512,
    # official sampling defaults; use temperature=0 for evaluation
    generation_cfg=dict(max_new_tokens=256, temperature=0.1, top_p=0.75),
    # the released models saw BGR images normalised with CLIP's RGB
    # statistics (spec §6); to_rgb=True gives the "correct" colours but does
    # not match the released weights
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        mean=[122.770938, 116.7460125, 104.09373615],
        std=[68.5005327, 66.6321579, 70.32316305],
        to_rgb=False),
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=224,
        edge='short',
        interpolation='bicubic',
        backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(
        type='PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['image_id']),
]

test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(
        type='COCOCaption',
        data_root='data/coco',
        ann_file='annotations/coco_karpathy_val.json',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
    persistent_workers=False,
    # MultiModalDataPreprocessor expects stacked images
    collate_fn=dict(type='default_collate'),
)
test_evaluator = dict(
    type='COCOCaption',
    ann_file='data/coco/annotations/coco_karpathy_val_gt.json')
test_cfg = dict()

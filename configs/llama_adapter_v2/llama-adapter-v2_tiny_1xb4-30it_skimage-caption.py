# Quick start on real embedded data: scikit-image's sample photos with
# one-line captions, a random tiny LLaMA (Meta layout) and CLIP, and a
# SentencePiece tokenizer trained on the captions. Prepare the data with
#   python -m visionllama_mm.datasets.llama_adapter_skimage \
#       data/llama_adapter_skimage --tiny-models
# then train (CPU, a minute) and write captions:
#   python tools/train.py configs/llama_adapter_v2/<this file>
#   python tools/test.py configs/llama_adapter_v2/<this file> \
#       work_dirs/<this name>/iter_30.pth
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/models/llama-adapter-v2.py',
    '../_base_/datasets/llama-adapter-v2_coco-caption_train.py',
    '../_base_/datasets/llama-adapter-v2_coco-caption_test.py',
]

data_root = 'data/llama_adapter_skimage'

model = dict(
    llm=dict(meta_dir=data_root + '/llama_tiny'),
    tokenizer=dict(name_or_path=data_root + '/tokenizer.model'),
    vision_encoder=dict(name_or_path=data_root + '/clip_tiny'),
    phase='pretrain',
    task='caption',
    query_len=10,
    query_layer=3,
    v_embed_dim=48,
    v_depth=2,
    v_num_heads=4,
    max_words=96,
    generation_cfg=dict(max_new_tokens=20, temperature=0.0),
)

train_dataloader = dict(
    num_workers=0,
    dataset=dict(
        data_root=data_root, ann_file='annotations/captions_train.json'))
test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(
        data_root=data_root, ann_file='annotations/captions_val.json'))
# predictions (pred_caption, image_id) are dumped; COCO caption metrics need
# pycocoevalcap and a COCO-format ground-truth file
test_evaluator = dict(
    _delete_=True,
    type='DumpResults',
    out_file_path='work_dirs/skimage_captions.pkl')

optim_wrapper = dict(
    constructor='visionllama_mm.LLaMAAdapterV2OptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
]
train_cfg = dict(by_epoch=False, max_iters=30)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=30, by_epoch=False))
randomness = dict(seed=0)

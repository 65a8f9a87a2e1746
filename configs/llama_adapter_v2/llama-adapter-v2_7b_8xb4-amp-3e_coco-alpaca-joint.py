# LLaMA-Adapter V2 multimodal 7B, the paper's joint training (arXiv
# 2304.15010, Sec. 3.3): one run over image-caption pairs and instruction
# data with disjoint parameter groups. Image-text samples update the visual
# side (bridge and the early zero-init attention), instruction samples the
# language side (late adaptation prompts, gates, norms, biases/scales).
# fusion='early' and bias_mode='paper' are the paper's choices; no weights
# were released for this variant.
_base_ = './llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain.py'

model = dict(
    phase='joint',
    task='chat',
    fusion='early',
    bias_mode='paper',
    max_words=512)

caption_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.9, 1.0),
        aspect_ratio_range=(0.75, 1.3333),
        interpolation='bicubic',
        backend='pillow'),
    dict(
        type='PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['image_id']),
]
instruction_pipeline = [
    dict(type='visionllama_mm.LoadImageOrBlank', size=224),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.9, 1.0),
        aspect_ratio_range=(0.75, 1.3333),
        interpolation='bicubic',
        backend='pillow'),
    dict(
        type='PackInputs',
        algorithm_keys=['question', 'input', 'gt_answer', 'text_only'],
        meta_keys=['image_id']),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(
                type='COCOCaption',
                data_root='data/coco',
                ann_file='annotations/coco_karpathy_train.json',
                pipeline=caption_pipeline),
            dict(
                type='visionllama_mm.LLaMAAdapterInstructionDataset',
                data_root='data/llama_adapter',
                ann_file='alpaca_gpt4_data.json',
                pipeline=instruction_pipeline),
        ]))
# batches may hold only one kind of sample: the other side gets no gradient
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)

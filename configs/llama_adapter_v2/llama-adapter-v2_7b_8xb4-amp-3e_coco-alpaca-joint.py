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

caption_pipeline = _base_.train_pipeline
instruction_pipeline = _base_.instruction_pipeline
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(_base_.train_dataloader.dataset, pipeline=caption_pipeline),
            dict(
                type='visionllama_mm.LLaMAAdapterInstructionDataset',
                data_root='data/llama_adapter',
                ann_file='alpaca_gpt4_data.json',
                pipeline=instruction_pipeline),
        ]))
# batches may hold only one kind of sample: the other side gets no gradient
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)

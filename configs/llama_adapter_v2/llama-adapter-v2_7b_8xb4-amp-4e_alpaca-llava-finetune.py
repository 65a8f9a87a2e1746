# LLaMA-Adapter V2 multimodal 7B, instruction finetuning phase (the released
# recipe, docs/llama_adapter_v2.md#phases-and-trainable-groups): only LLaMA's
# norms and biases are trained (plus LoRA with w_lora=True), starting from the
# pretraining result (load_from). Data: a YAML file with META:
# [alpaca_gpt4_data.json, llava_instruct.json, ...]: Alpaca records are
# text-only (a zero image), LLaVA records use their first turn (turns='first',
# as released; turns='all' makes every turn of a conversation a sample).
# Released recipe: 8 GPUs x 4, lr 1e-3 * 32 / 256, weight decay
# 0.02, 4 epochs with 1 warmup epoch, max_words 512.
_base_ = './llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain.py'

load_from = 'work_dirs/llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain/epoch_3.pth'  # noqa: E501

model = dict(phase='finetune', task='chat', max_words=512)

# the pretraining augmentation; text-only samples get a blank image
train_pipeline = _base_.instruction_pipeline
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='visionllama_mm.LLaMAAdapterInstructionDataset',
        data_root='data/llama_adapter',
        ann_file='finetune.yaml',
        turns='first',
        pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=1e-3 * 32 / 256, weight_decay=0.02))
# the pretraining schedule's shape: linear warmup (1 epoch), half-cosine to 0
param_scheduler = [
    dict(_base_.param_scheduler[0], end=1),
    dict(_base_.param_scheduler[1], begin=1, end=4),
]
train_cfg = dict(max_epochs=4)

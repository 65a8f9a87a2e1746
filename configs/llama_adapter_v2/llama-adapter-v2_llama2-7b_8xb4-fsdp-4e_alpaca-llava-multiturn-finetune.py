# LLaMA-Adapter V2 on LLaMA-2-7B, instruction finetuning: the released
# finetuning recipe (llama-adapter-v2_7b_8xb4-amp-4e_alpaca-llava-finetune.py:
# LLaMA norms and biases trained, same data mix, lr and schedule) on the
# LLaMA-2 base, sharded with FSDP, and with every turn of the LLaVA
# conversations as a sample (the earlier turns are its context) where the
# released recipe kept the first turn only.
#
# Start from the LLaMA-2 pretraining result (load_from). Launch:
#   tools/dist_train.sh <this config> 8
_base_ = [
    './llama-adapter-v2_7b_8xb4-amp-4e_alpaca-llava-finetune.py',
    '../_base_/strategies/fsdp.py',
]

llama_dir = 'data/llama2/Llama-2-7b-hf'

load_from = 'work_dirs/llama-adapter-v2_llama2-7b_8xb4-fsdp-3e_coco-caption-pretrain/epoch_3.pth'  # noqa: E501

model = dict(
    llm=dict(_delete_=True, name_or_path=llama_dir, dtype='float32'),
    tokenizer=dict(name_or_path=llama_dir),
    vision_encoder=dict(dtype='float32'))
train_dataloader = dict(dataset=dict(turns='all'))
optim_wrapper = dict(dtype='bfloat16')
# under FSDP the adapter-only checkpoint is cut from the gathered state dict
custom_hooks = [dict(type='visionllama_mm.LLaMAAdapterV2CheckpointHook')]

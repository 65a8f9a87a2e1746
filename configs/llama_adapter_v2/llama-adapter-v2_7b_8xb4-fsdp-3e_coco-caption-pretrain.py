# LLaMA-Adapter V2 7B image-text pretraining (the released recipe of
# llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain.py) with the frozen
# LLaMA and CLIP sharded by FSDP instead of replicated on every GPU.
#
# * one FSDP unit per LLaMA decoder layer and per bridge block; the frozen
#   weights are sharded like the trainable ones but never enter the
#   optimizer (use_orig_params=True; the optimizer constructor takes only
#   the phase's trainable groups);
# * FSDP needs one dtype per unit, and the trainable norms / biases / gates
#   are float32: the LLaMA and CLIP are stored in float32 (sharded: 7B x 4
#   bytes / 8 ranks = 3.4 GB per rank) and computed in bfloat16 by autocast;
# * the checkpoint rank 0 writes holds only the adapter-side weights under
#   the official names, like the replicated recipe's.
#
# Memory per rank on 8 ranks: see the README ("Choosing DDP, FSDP or
# DeepSpeed").
# Launch: tools/dist_train.sh <this config> 8
_base_ = [
    './llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain.py',
    '../_base_/strategies/fsdp.py',
]

model = dict(llm=dict(dtype='float32'), vision_encoder=dict(dtype='float32'))
optim_wrapper = dict(dtype='bfloat16')
# under FSDP the adapter-only checkpoint is cut from the gathered state dict
custom_hooks = [dict(type='visionllama_mm.LLaMAAdapterV2CheckpointHook')]

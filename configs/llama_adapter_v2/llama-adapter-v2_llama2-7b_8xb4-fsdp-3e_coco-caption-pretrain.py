# LLaMA-Adapter V2 on LLaMA-2-7B, image-text pretraining: the released 7B
# recipe (llama-adapter-v2_7b_8xb4-amp-3e_coco-caption-pretrain.py) on the
# LLaMA-2 base, sharded with FSDP like
# llama-adapter-v2_7b_8xb4-fsdp-3e_coco-caption-pretrain.py.
#
# llama_dir: a transformers LLaMA-2-7B directory (meta-llama/Llama-2-7b-hf:
# config.json, weights and tokenizer files). Any transformers
# LlamaForCausalLM directory works the same way: LLaMA-2-13B/70B (70B uses
# grouped-query attention) or LLaMA-3 (edit llama_dir and the tokenizer
# type, e.g. AutoTokenizer; the bridge and prompts follow the LLM's width
# and depth, query_layer must not exceed its number of layers). Meta's own
# params.json + consolidated.NN.pth layout works too: model.llm =
# dict(meta_dir=...) (the 13B / 70B model-parallel shards are merged on
# load).
#
# Launch: tools/dist_train.sh <this config> 8
_base_ = [
    './llama-adapter-v2_7b_8xb4-fsdp-3e_coco-caption-pretrain.py',
]

llama_dir = 'data/llama2/Llama-2-7b-hf'

model = dict(
    llm=dict(_delete_=True, name_or_path=llama_dir, dtype='float32'),
    tokenizer=dict(type='LlamaTokenizer', name_or_path=llama_dir))

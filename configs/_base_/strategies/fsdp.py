# Fully sharded data parallel (FSDP) training through mmengine's
# FlexibleRunner. Add this file to a config's `_base_` list and launch it as
# usual (tools/dist_train.sh CONFIG NUM_GPUS); see the README section
# "Choosing DDP, FSDP or DeepSpeed".
#
# * one FSDP unit per transformer block of this package (the VisionLLaMA,
#   pyramid, MAE, DiT/SiT and adapter blocks and transformers'
#   LlamaDecoderLayer): its parameters are gathered just before the block
#   runs and freed after it;
# * use_orig_params=True: the optimizer sees the original parameters, so
#   frozen parameters (the adapter's LLaMA) stay out of it while being
#   sharded like the others, and parameter-wise optimizer rules keep working;
# * state_dict_cfg='full': rank 0 writes one ordinary checkpoint with the
#   unsharded model, optimizer and scheduler states. It resumes under FSDP
#   (--resume) and loads into the plain model for tools/test.py, `load_from`
#   and the converters. ('local' writes one shard file per rank instead:
#   faster for very large models, but only an FSDP run of the same world
#   size can read it.)
#
# * sync_module_states=True: rank 0's initial weights are copied to every
#   rank before sharding, as DDP does; recipes with
#   randomness.diff_rank_seed=True seed the ranks differently, so without it
#   every rank would start from its own initialisation;
# * visionllama_mm.FSDPStrategy is mmengine's FSDPStrategy with the optimizer
#   state loaded in torch's (>= 2.1) argument order, so that --resume works,
#   and sync_module_states done on CPU too (FSDP itself needs a GPU for it);
# * EMA: visionllama_mm.FSDPEMAHook in place of EMAHook (which deep-copies
#   the model).
#
# Without CUDA, tools/train.py runs this on CPU with gloo (device_id='cpu').
runner_type = 'FlexibleRunner'
strategy = dict(
    type='visionllama_mm.FSDPStrategy',
    state_dict_cfg='full',
    model_wrapper=dict(
        type='MMFullyShardedDataParallel',
        auto_wrap_policy=dict(type='visionllama_mm.llama_block_wrap_policy'),
        use_orig_params=True,
        sync_module_states=True))

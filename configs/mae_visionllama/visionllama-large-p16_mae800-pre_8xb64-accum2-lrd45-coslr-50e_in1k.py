# Fine-tune VisionLLaMA-L/16 on ImageNet-1k from the 800-epoch MAE encoder.
#
# Official recipe (spec-visionllama.md §8.2; upstream
# `lama-large-p16_8xb128-coslr-800-lrd45-50e_in1k.py`, whose name says 8xb128
# although it runs 64 images per GPU with 2 accumulation steps, i.e. 1024
# images per optimiser step): mmpretrain's MAE ViT-L fine-tune recipe
# (AdamW lr 4e-3, warmup 5 epochs, cosine to epoch 50) with the plain
# VisionLLaMA-L backbone (drop path 0.2, GAP + ln2, no final norm) and
# layer-wise lr decay 0.45 instead of 0.75. See the base fine-tune config for
# `mae_checkpoint`.
_base_ = 'mmpretrain::mae/benchmarks/vit-large-p16_8xb128-coslr-50e_in1k.py'

custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

mae_checkpoint = 'checkpoints/mae_visionllama-large-p16_800e.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch='large',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.2,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=mae_checkpoint,
            prefix='backbone.')))

train_dataloader = dict(batch_size=64)

optim_wrapper = dict(
    accumulative_counts=2, paramwise_cfg=dict(layer_decay_rate=0.45))

default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))

# Fine-tune VisionLLaMA-B/16 on ImageNet-1k from the 800-epoch MAE encoder.
#
# Official recipe (spec-visionllama.md §8.2; upstream
# `lama-base-p16_8xb128-coslr-800-lrd45-100e_in1k.py`): mmpretrain's MAE ViT-B
# fine-tune recipe with the backbone replaced by the plain VisionLLaMA
# (drop path 0.1, GAP + ln2, no final norm) and layer-wise lr decay 0.45
# instead of 0.65. Inherited unchanged: LinearClsHead (LabelSmooth 0.1,
# TruncNormal 2e-5), Mixup 0.8 / CutMix 1.0, RandAugment + RandomErasing,
# batch 128 x 8, AdamW lr 2e-3, wd 0.05, betas (0.9, 0.999), no decay for
# .ln / .bias / .cls_token / .pos_embed and norms / biases / 1-D params,
# warmup 5 epochs from 1e-4, cosine to epoch 100 (eta_min 1e-6), seed 0.
#
# `mae_checkpoint`: the MAE weights, either an MAE run's epoch_800.pth (the
# official mtgv/VisionLLaMA-Base-MAE file or your own) or a backbone file
# converted from it with tools/model_converters/visionllama_to_mmpretrain.py
# (`--backbone-only` keeps the `backbone.` prefix off; then set prefix=None).
# Override it on the command line with
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'

custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

mae_checkpoint = 'checkpoints/mae_visionllama-base-p16_800e.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch='base',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=mae_checkpoint,
            prefix='backbone.')))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.45))

default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))

# MAE pretraining of VisionLLaMA-B/16 on ImageNet-1k, 800 epochs.
#
# Official recipe (docs/visionllama.md#mae-pretraining-recipe; upstream
# `mae_lama-base-p16_8xb512-amp-coslr-800e_in1k.py`): mmpretrain's MAE ViT-B
# recipe with the encoder replaced by `MAELLaMA`. Everything else is inherited
# unchanged from the mmpretrain base: MAEPretrainDecoder (512-d, depth 8,
# 16 heads), MAEPretrainHead (norm_pix, L2), Xavier-uniform Linear / LN 1-0
# init, RandomResizedCrop 224 (0.2-1.0, bicubic) + flip, batch 512 x 8 = 4096,
# AmpOptimWrapper + AdamW lr 1.5e-4 * 4096 / 256 = 2.4e-3, betas (0.9, 0.95),
# wd 0.05 (0 for ln / bias / pos_embed / mask_token / cls_token), LinearLR
# warmup 40 epochs from 1e-9, cosine to epoch 800, seed 0 (diff_rank_seed).
#
# Launch: tools/dist_train.sh <this config> 8 --amp
# The result (work_dirs/<config>/epoch_800.pth) is the starting point of the
# fine-tune and linear-probe configs of this folder; convert it to a backbone
# file with tools/model_converters (optional: they also load it directly).
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py'

custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.MAELLaMA',
        arch='b',
        patch_size=16,
        mask_ratio=0.75))

# mmengine adds `_scope_` to every typed dict of a `mmpretrain::` base, and
# its Runner passes a collate_fn dict's keys on as keyword arguments: restate
# the collate function without it.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))

# The official config ships `resume = True`; resuming is left to the command
# line (`--resume`), see docs/openmmlab.md#config-conventions.
resume = False

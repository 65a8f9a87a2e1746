# MAE pretraining of VisionLLaMA-B/16 on ImageNet-1k, 1600 epochs.
#
# Official recipe (spec-visionllama.md §8.1; upstream
# `mae_lama-base-p16_8xb512-amp-coslr-1600e_in1k.py`): as the 800-epoch
# config, but the LinearLR warmup (40 epochs) starts from 1e-4 and the cosine
# runs to epoch 1600; both inherited from mmpretrain's MAE ViT-B 1600e recipe.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k.py'

custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

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

# The official config ships `resume = True`; use `--resume` instead.
resume = False

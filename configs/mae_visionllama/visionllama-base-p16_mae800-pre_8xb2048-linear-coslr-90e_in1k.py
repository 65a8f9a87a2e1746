# Linear probe of the 800-epoch MAE VisionLLaMA-B/16 encoder on ImageNet-1k.
#
# Official recipe (spec-visionllama.md §8.3; upstream
# `lama-base-p16_8xb2048-linear-coslr-800-90e_in1k.py`): mmpretrain's MAE
# ViT-B linear-probe recipe with the frozen plain VisionLLaMA backbone
# (frozen_stages=12) giving GAP + ln2 features (ln2 stays frozen at its
# identity init) instead of the ViT class token. Inherited unchanged:
# ClsBatchNormNeck (BN1d, no affine), VisionTransformerClsHead (TruncNormal
# 0.01), LARS lr 6.4, wd 0, momentum 0.9 under AMP, batch 2048 x 8, warmup 10
# epochs from 1e-4, cosine to epoch 90, RandomResizedCrop 224 + flip, seed 0.
# See the base fine-tune config for `mae_checkpoint`.
_base_ = \
    'mmpretrain::mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py'

custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

mae_checkpoint = 'checkpoints/mae_visionllama-base-p16_800e.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch='base',
        img_size=224,
        patch_size=16,
        frozen_stages=12,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=mae_checkpoint,
            prefix='backbone.')))

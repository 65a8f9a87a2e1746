# Linear probe of the 800-epoch MAE VisionLLaMA-L/16 encoder on ImageNet-1k.
#
# Official recipe (spec-visionllama.md §8.3; upstream
# `lama-large-p16_8xb2048-linear-coslr-800-90e_in1k.py`): mmpretrain's MAE
# ViT-L linear-probe recipe (as the base one, 1024-d neck and head) with the
# frozen plain VisionLLaMA-L backbone (frozen_stages=24, GAP + ln2). The
# official run keeps one checkpoint. See the base fine-tune config for
# `mae_checkpoint`.
_base_ = \
    'mmpretrain::mae/benchmarks/vit-large-p16_8xb2048-linear-coslr-90e_in1k.py'

custom_imports = dict(imports=['visionllama_mm'], allow_failed_imports=False)

mae_checkpoint = 'checkpoints/mae_visionllama-large-p16_800e.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch='large',
        img_size=224,
        patch_size=16,
        frozen_stages=24,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=mae_checkpoint,
            prefix='backbone.')))

default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))

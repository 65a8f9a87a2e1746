# Supervised DeiT-III training of the deit-style plain VisionLLaMA-B at
# 192 px (upstream ImageNet1k_SFT.md, vit_llama_rope_base_patch16:
# LAMB lr 3e-3, drop path 0.2, 800 epochs, evaluated at 192 px), fine-tuned
# at 224 px afterwards with
# visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k.py.
_base_ = ['./visionllama-deit3-small-p16_8xb256-lamb-800e_in1k.py']

img_size = 192

# the small recipe's pipelines at this resolution
train_pipeline = [
    _base_.train_pipeline[0],
    dict(_base_.train_pipeline[1], scale=img_size),  # RandomResizedCrop
    *_base_.train_pipeline[2:],
]
test_pipeline = [
    _base_.test_pipeline[0],
    # ResizeEdge to int(256 / 224 * s), as the deit build_transform
    dict(_base_.test_pipeline[1], scale=int(256 / 224 * img_size)),
    dict(_base_.test_pipeline[2], crop_size=img_size),  # CenterCrop
    _base_.test_pipeline[3],
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    backbone=dict(arch='base', img_size=img_size, drop_path_rate=0.2),
    head=dict(in_channels=768))
optim_wrapper = dict(optimizer=dict(lr=3e-3))

# ImageNet-1k fine-tuning of VisionLLaMA-L from the MAE 800-epoch encoder
# (upstream lama-large-p16_8xb128-coslr-800-lrd45-50e_in1k.py, whose name
# says 8xb128 but which runs 8 x 64 images with 2 accumulation steps = 1024
# per step; fp16 AMP from the base config).
# AdamW lr 4e-3, layer-wise lr decay 0.45, drop path 0.2, 5 + 45 epochs.
_base_ = ['./visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k.py']

# HF mtgv/VisionLLaMA-Large-MAE/epoch_800.pth, converted with
# tools/model_converters/visionllama_to_mmpretrain.py
pretrained = 'checkpoints/visionllama-large-p16_mae-800e_in1k.pth'

train_dataloader = dict(batch_size=64)

model = dict(
    backbone=dict(
        arch='large', drop_path_rate=0.2,
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(lr=4e-3), accumulative_counts=2)

param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], T_max=45, end=50),
]

train_cfg = dict(by_epoch=True, max_epochs=50)
default_hooks = dict(
    checkpoint=dict(
        type='visionllama_mm.ResumableCheckpointHook',
        interval=1,
        max_keep_ckpts=1))

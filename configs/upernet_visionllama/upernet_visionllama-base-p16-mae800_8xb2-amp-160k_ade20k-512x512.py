# UperNet on ADE20K with the plain VisionLLaMA-B, MAE-pretrained for 800
# epochs (docs/dense.md#upernet-with-the-plain-backbone; reported 49.0 mIoU).
# Feature2Pyramid turns blocks 3/5/7/11 (stride 16) into strides 4/8/16/32.
# Layer-wise lr decay 0.65 through
# visionllama_mm.LayerDecayOptimWrapperConstructor, which asks the backbone's
# get_layer_depth (ids 0..13, no class-name matching).
_base_ = [
    'mmseg::_base_/models/upernet_mae.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

# MAE-pretrained VisionLLaMA-B: the last checkpoint of
# configs/mae_visionllama/mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k.py, or the released
# HF mtgv/VisionLLaMA-Base-MAE epoch_800.pth converted to a tensors-only file:
#   python tools/model_converters/visionllama_to_mmpretrain.py \
#       epoch_800.pth checkpoints/visionllama-base-p16_mae-800e_in1k.pth
# Loaded with the 'backbone.' prefix (pos_embed / cls_token / ln1 unused).
checkpoint_file = 'checkpoints/visionllama-base-p16_mae-800e_in1k.pth'

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.VisionLLaMA',
        arch='base',
        img_size=512,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        final_norm=False,
        out_indices=[3, 5, 7, 11],
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(
        in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='visionllama_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        num_layers=12, layer_decay_rate=0.65, no_decay_rule='upstream'))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False,
    )
]

# 8 GPUs x 2 images per GPU
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)

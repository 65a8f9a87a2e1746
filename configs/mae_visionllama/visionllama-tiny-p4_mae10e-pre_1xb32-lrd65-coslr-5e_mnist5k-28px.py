# Fine-tune the tiny MAE-pretrained VisionLLaMA on real digits (CPU).
#
# Starts from the encoder of mae_visionllama-tiny-p4_1xb32-coslr-10e_
# mnist5k-28px.py (`mae_checkpoint`: its epoch_10.pth as written by
# tools/train.py, or that file converted with
# tools/model_converters/visionllama_to_mmpretrain.py) through
# init_cfg=dict(type='Pretrained', prefix='backbone.'). The MAE fine-tune
# recipe at a tiny size: GAP + ln2, no final norm, drop path 0.1,
# LabelSmooth 0.1, AdamW with mmpretrain's layer-wise lr decay (0.65 for 4
# blocks), warmup then cosine; trains on the 4,000 training digits and
# reports top-1 on the 1,000 held-out ones. Batch 32 (625 steps in the 5
# epochs; with batch 128 the 160 steps left the model at ~60 % top-1).
#
#   python tools/train.py configs/mae_visionllama/<this file> \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = ['../_base_/mnist5k_cls.py']

mae_checkpoint = ('work_dirs/mae_visionllama-tiny-p4_1xb32-coslr-10e_'
                  'mnist5k-28px/epoch_10.pth')
img_size = 28
patch_size = 4
embed_dims = 64
max_epochs = 5

# ---------------------------------------------------------------- data
train_dataloader = dict(batch_size=32)

# ---------------------------------------------------------------- model
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='visionllama_mm.VisionLLaMA',
        arch=dict(embed_dims=embed_dims, num_layers=4, num_heads=4),
        img_size=img_size,
        patch_size=patch_size,
        in_channels=1,
        ffn_hidden_rule='llama',
        drop_path_rate=0.1,
        out_type='avg_featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=mae_checkpoint, prefix='backbone.')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=embed_dims,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]))

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=2e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.ln': dict(decay_mult=0.0),
            '.bias': dict(decay_mult=0.0),
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 1,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        eta_min=1e-5,
        convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)

# ---------------------------------------------------------------- runtime
default_hooks = dict(checkpoint=dict(interval=max_epochs))

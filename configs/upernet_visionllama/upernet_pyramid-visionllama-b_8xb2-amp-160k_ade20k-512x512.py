# UperNet on ADE20K with Pyramid VisionLLaMA-B
# (docs/dense.md#upernet-with-the-pyramid-backbone): the -S config with the -B
# backbone.
_base_ = ['./upernet_pyramid-visionllama-s_8xb2-amp-160k_ade20k-512x512.py']

# ImageNet-1k Pyramid VisionLLaMA-B: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-B best_checkpoint.pth) as is, or converted by
# tools/model_converters; loaded with the -S config's prefix='backbone.'.
checkpoint_file = 'checkpoints/pyramid-visionllama-b_in1k.pth'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

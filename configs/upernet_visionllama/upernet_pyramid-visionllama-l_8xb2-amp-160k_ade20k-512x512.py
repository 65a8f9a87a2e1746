# UperNet on ADE20K with Pyramid VisionLLaMA-L
# (docs/dense.md#upernet-with-the-pyramid-backbone): the -S config with the -L
# backbone.
_base_ = ['./upernet_pyramid-visionllama-s_8xb2-amp-160k_ade20k-512x512.py']

# ImageNet-1k Pyramid VisionLLaMA-L: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-L best_checkpoint.pth) as is, or converted by
# tools/model_converters; loaded with the -S config's prefix='backbone.'.
checkpoint_file = 'checkpoints/pyramid-visionllama-l_in1k.pth'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

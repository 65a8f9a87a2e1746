# Mask R-CNN 3x (36 epochs) with multi-scale + crop training on COCO and
# Pyramid VisionLLaMA-L. EXTRAPOLATED: upstream released the -B recipe only;
# -L follows it with drop path 0.3: the -S config with the -L backbone.
_base_ = ['./mask-rcnn_pyramid-visionllama-s_fpn_amp-ms-crop-3x_coco.py']

# ImageNet-1k Pyramid VisionLLaMA-L: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-L best_checkpoint.pth) as is, or converted by
# tools/model_converters; loaded with the -S config's prefix='backbone.'.
checkpoint_file = 'checkpoints/pyramid-visionllama-l_in1k.pth'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

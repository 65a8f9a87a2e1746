# Mask R-CNN 3x (36 epochs) with multi-scale + crop training on COCO and
# Pyramid VisionLLaMA-B, the released recipe (upstream Detection.md:
# mmdetection/configs/twins/mask-rcnn_twins-b-p4-w7_fpn_ms-crop-3x_coco.py
# with --amp): the -S config with the -B backbone.
_base_ = ['./mask-rcnn_pyramid-visionllama-s_fpn_amp-ms-crop-3x_coco.py']

# ImageNet-1k Pyramid VisionLLaMA-B: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-B best_checkpoint.pth) as is, or converted by
# tools/model_converters; loaded with the -S config's prefix='backbone.'.
checkpoint_file = 'checkpoints/pyramid-visionllama-b_in1k.pth'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

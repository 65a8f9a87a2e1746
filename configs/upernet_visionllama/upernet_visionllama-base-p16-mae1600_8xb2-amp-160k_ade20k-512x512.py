# UperNet on ADE20K with the plain VisionLLaMA-B, MAE-pretrained for 1600
# epochs (docs/dense.md#upernet-with-the-plain-backbone; reported 50.2 mIoU):
# the MAE-800 recipe with the longer-pretrained backbone.
_base_ = [
    './upernet_visionllama-base-p16-mae800_8xb2-amp-160k_ade20k-512x512.py'
]

# MAE-pretrained VisionLLaMA-B: the last checkpoint of
# configs/mae_visionllama/mae_visionllama-base-p16_8xb512-amp-coslr-1600e_in1k.py, or the released
# HF mtgv/VisionLLaMA-Base-MAE epoch_1600.pth converted to a tensors-only file:
#   python tools/model_converters/visionllama_to_mmpretrain.py \
#       epoch_1600.pth checkpoints/visionllama-base-p16_mae-1600e_in1k.pth
checkpoint_file = 'checkpoints/visionllama-base-p16_mae-1600e_in1k.pth'

model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint_file)))

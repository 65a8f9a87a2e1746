# ViTDet Mask R-CNN with the plain VisionLLaMA-L (MAE 800 epochs), LSJ 1024,
# "36e". EXTRAPOLATED: upstream VisionLLaMA released no -L ViTDet recipe;
# this is the -B recipe with ViTDet's own ViT-L settings (arXiv
# 2203.16527: drop path 0.4, layer decay 0.8, global blocks 5/11/17/23).
# 8 GPUs x 4 images per forward and accumulative_counts=2 -> 64 images per
# optimiser step. max_iters counts FORWARD iterations (137250 x 32 images
# ~ 37 COCO epochs), as upstream.
_base_ = './vitdet_mask-rcnn_visionllama-base-p16-mae800_8xb4-accum2-lsj-36e_coco.py'  # noqa: E501

# MAE-pretrained VisionLLaMA-L: the last checkpoint of
# configs/mae_visionllama/mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k.py, or the released
# HF mtgv/VisionLLaMA-Large-MAE epoch_800.pth converted to a tensors-only file:
#   python tools/model_converters/visionllama_to_mmpretrain.py \
#       epoch_800.pth checkpoints/visionllama-large-p16_mae-800e_in1k.pth
# Loaded with the 'backbone.' prefix (pos_embed / cls_token / ln1 unused).
checkpoint_file = 'checkpoints/visionllama-large-p16_mae-800e_in1k.pth'

backbone_channels = 1024
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.4,
        # global blocks 5, 11, 17, 23 (ViTDet-L); all others use windows
        window_block_indexes=[
            0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20, 21,
            22
        ],
        init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(
        backbone_channel=backbone_channels,
        in_channels=[
            backbone_channels // 4, backbone_channels // 2, backbone_channels,
            backbone_channels
        ]))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8, num_layers=24))

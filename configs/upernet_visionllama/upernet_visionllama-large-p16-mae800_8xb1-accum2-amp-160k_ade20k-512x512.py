# UperNet on ADE20K with the plain VisionLLaMA-L, MAE-pretrained for 800
# epochs (docs/dense.md#upernet-with-the-plain-backbone). Blocks 7/11/15/23,
# 1024 channels, layer decay 0.65 over 24 layers; 8 GPUs x 1 image with
# accumulative_counts=2 (16 images per optimiser step, as for -B).
_base_ = [
    './upernet_visionllama-base-p16-mae800_8xb2-amp-160k_ade20k-512x512.py'
]

# MAE-pretrained VisionLLaMA-L: the last checkpoint of
# configs/mae_visionllama/mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k.py,
# or HF mtgv/VisionLLaMA-Large-MAE epoch_800.pth converted with
# tools/model_converters/visionllama_to_mmpretrain.py.
checkpoint_file = 'checkpoints/visionllama-large-p16_mae-800e_in1k.pth'

model = dict(
    backbone=dict(
        arch='large',
        out_indices=[7, 11, 15, 23],
        init_cfg=dict(checkpoint=checkpoint_file)),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(accumulative_counts=2, paramwise_cfg=dict(num_layers=24))

train_dataloader = dict(batch_size=1)

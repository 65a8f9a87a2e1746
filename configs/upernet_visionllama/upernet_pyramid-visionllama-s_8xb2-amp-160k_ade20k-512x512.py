# UperNet on ADE20K with Pyramid VisionLLaMA-S
# (docs/dense.md#upernet-with-the-pyramid-backbone): the Twins-SVT UperNet
# recipe (mmseg twins_svt-s, 160k, AdamW lr 6e-5, wd 0.01, no decay for 'norm')
# with the backbone replaced. AS2DRoPE is on in the GSA blocks
# (auto_scale=True, anchor 14 tokens in every stage, the official setting); a
# fresh LayerNorm after each stage feeds the next.
_base_ = ['mmseg::twins/twins_svt-s_uperhead_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

# ImageNet-1k Pyramid VisionLLaMA-S: the official deit checkpoint (HF
# mtgv/Pyramid-VisionLLaMA-S best_checkpoint.pth, as downloaded or as its
# URL; it is converted while loading), or the file that
# tools/model_converters/pyramid_visionllama_to_mmpretrain.py writes. Its
# keys start with 'backbone.'; the classifier's norm / head are dropped and
# the dense norm_list is new.
checkpoint_file = 'checkpoints/pyramid-visionllama-s_in1k.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='visionllama_mm.PyramidVisionLLaMA',
        arch='small',
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        final_norm=False,
        norm_after_stage=True,
        auto_scale=True,
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The deit-style plain VisionLLaMA classifier of the DeiT-III recipes
# (upstream deit/models_v2_rope.py
# vit_llama_rope_*_patch16): layer scale 1e-4, the class token rotated at the
# official position, its output classified by a linear head, Mixup 0.8 /
# CutMix 1.0. The inheriting configs set arch, img_size, drop path, the head
# width and loss, and the optimizer.
custom_imports = dict(
    imports=['visionllama_mm.safe_loading'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='visionllama_mm.VisionLLaMADeiT',
        patch_size=16,
        layer_scale=1e-4,
        cls_rope_pos='official',
        out_type='cls_token'),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)]),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# the deit engine (engine_b.py) autocasts to bf16 where the GPU supports it
# (fp16 otherwise), with a GradScaler; timm's optimizer factory: no weight
# decay on 1-D parameters (norms, biases, layer scales) and on the class
# token
optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'.cls_token': dict(decay_mult=0.)}))

# Digit classification on the 5,000 MNIST digits (see mnist5k_mmpretrain.py):
# 10 classes, random 28 px crops of the 2 px padded digits for training,
# top-1 accuracy on the 1,000 held-out digits as they are. Each config sets
# the train batch_size.
_base_ = ['./mnist5k_mmpretrain.py']

data_preprocessor = dict(num_classes=10)
train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='visionllama_mm.MNIST5k', split='test', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
val_cfg = dict()
test_cfg = dict()

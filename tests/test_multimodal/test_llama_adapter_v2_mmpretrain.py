"""LLaMA-Adapter V2 in mmpretrain: registry/scope, shipped configs,
inferencers, datasets, optimizer constructor and end-to-end runs on the
embedded scikit-image caption data."""
import copy
import glob
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from llama_adapter_helpers import build_tiny

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIG_DIR = osp.join(REPO, 'configs', 'llama_adapter_v2')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
TINY_CONFIG = osp.join(CONFIG_DIR,
                       'llama-adapter-v2_tiny_1xb4-30it_skimage-caption.py')


def tiny_overrides(paths, work_dir=None):
    """--cfg-options that point the quick-start config at ``paths``."""
    opts = {
        'model.llm.meta_dir': paths['llama_dir'],
        'model.tokenizer.name_or_path': paths['tokenizer'],
        'model.vision_encoder.name_or_path': paths['clip_dir'],
        'train_dataloader.dataset.data_root': paths['root'],
        'test_dataloader.dataset.data_root': paths['root'],
    }
    if work_dir is not None:
        opts['test_evaluator.out_file_path'] = osp.join(
            work_dir, 'captions.pkl')
    return opts


def _shrink(cfg, paths):
    """Swap the 7B / ViT-L parts of a shipped config for the tiny ones."""
    cfg.model.llm = dict(meta_dir=paths['llama_dir'])
    cfg.model.tokenizer = dict(
        type='LlamaTokenizer', name_or_path=paths['tokenizer'])
    cfg.model.vision_encoder = dict(type='hf', name_or_path=paths['clip_dir'])
    cfg.model.update(query_layer=3, v_embed_dim=48, v_depth=1, v_num_heads=4)
    if cfg.model.get('w_lora'):
        cfg.model.lora_rank = 4
    cfg.model.generation_cfg = dict(
        cfg.model.get('generation_cfg', {}), max_new_tokens=4)
    return cfg


def _image(paths, name='chelsea'):
    return osp.join(paths['root'], 'images', f'{name}.png')


def test_registered_and_buildable_from_mmpretrain_scope():
    from llama_adapter_helpers import tiny_model_cfg
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    from visionllama_mm.multimodal import LLaMAAdapterV2
    from visionllama_mm.registry import MODELS
    assert MODELS.get('LLaMAAdapterV2') is LLaMAAdapterV2
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MMPRETRAIN_MODELS.build(tiny_model_cfg())
    assert isinstance(model, LLaMAAdapterV2)
    dp = model.data_preprocessor
    assert type(dp).__name__ == 'MultiModalDataPreprocessor'
    assert dp.to_rgb is False
    torch.testing.assert_close(
        dp.mean.flatten(),
        torch.tensor([122.770938, 116.7460125, 104.09373615]))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_shipped_configs_build_and_run(path, skimage_data):
    from mmpretrain.registry import MODELS, TRANSFORMS
    cfg = _shrink(Config.fromfile(path), skimage_data)
    assert cfg.model.type == 'visionllama_mm.LLaMAAdapterV2'
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        pipelines = []
        for key in ('train_dataloader', 'test_dataloader'):
            if key not in cfg:
                continue
            ds = cfg[key].dataset
            for d in ds.get('datasets', [ds]):
                pipelines.append([TRANSFORMS.build(t) for t in d.pipeline])
    assert pipelines
    img = _image(skimage_data)
    packed = []
    for pipeline in pipelines:
        results = dict(
            img_path=img,
            gt_caption='a cat',
            question='What is it?',
            gt_answer=['cat'],
            gt_answer_weight=[1.0],
            image_id='chelsea',
            question_id=0,
            text_only=False)
        for t in pipeline:
            results = t(results)
        packed.append(results)
    batch = dict(
        inputs=torch.stack([packed[0]['inputs']] * 2),
        data_samples=[packed[0]['data_samples']] * 2)
    with torch.no_grad():
        out = model.test_step(
            dict(
                inputs=batch['inputs'],
                data_samples=[s.clone() for s in batch['data_samples']]))
    field = 'pred_caption' if cfg.model.task == 'caption' else 'pred_answer'
    assert all(isinstance(s.get(field), str) for s in out)
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])


@pytest.fixture(scope='module')
def tiny_cfg(skimage_data, tmp_path_factory):
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(tiny_overrides(skimage_data))
    cfg.work_dir = str(tmp_path_factory.mktemp('work'))
    return cfg


def test_caption_and_vqa_inferencers(tiny_cfg, skimage_data):
    from mmpretrain import (ImageCaptionInferencer,
                            VisualQuestionAnsweringInferencer)
    cfg = copy.deepcopy(tiny_cfg)
    inferencer = ImageCaptionInferencer(model=cfg, pretrained=False)
    images = [_image(skimage_data, n) for n in ('chelsea', 'rocket')]
    results = inferencer(images, batch_size=2)
    assert len(results) == 2
    assert all(isinstance(r['pred_caption'], str) for r in results)

    vqa = copy.deepcopy(cfg)
    vqa.model.task = 'vqa'
    vqa.test_dataloader.dataset.pipeline[-1] = dict(
        type='PackInputs', algorithm_keys=['question'], meta_keys=['image_id'])
    inferencer = VisualQuestionAnsweringInferencer(model=vqa, pretrained=False)
    results = inferencer(images[0], 'What animal is in the picture?')
    assert results[0]['question'] == 'What animal is in the picture?'
    assert isinstance(results[0]['pred_answer'], str)


def test_instruction_and_tsv_datasets(skimage_data):
    from visionllama_mm.datasets import (LLaMAAdapterCaptionTSVDataset,
                                         LLaMAAdapterInstructionDataset)
    pipeline = [
        dict(type='visionllama_mm.LoadImageOrBlank', size=32),
        dict(type='Resize', scale=(32, 32)),
        dict(
            type='PackInputs',
            algorithm_keys=['question', 'input', 'gt_answer', 'text_only'],
            meta_keys=['image_id']),
    ]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = LLaMAAdapterInstructionDataset(
            ann_file=skimage_data['instructions'],
            data_prefix=dict(img_path=skimage_data['root']),
            pipeline=pipeline)
    kinds = [ds[i]['data_samples'].text_only for i in range(len(ds))]
    assert any(kinds) and not all(kinds)
    first = ds[0]['data_samples']
    assert first.question.startswith('<image>\n')
    assert isinstance(first.gt_answer, str)
    text = ds[kinds.index(True)]
    assert text['inputs'].shape == (3, 32, 32)
    assert int(text['inputs'].sum()) == 0
    assert 'input' not in text['data_samples']  # empty input is absent
    tsv = LLaMAAdapterCaptionTSVDataset(
        ann_file=skimage_data['captions_tsv'],
        data_prefix=dict(img_path=skimage_data['root']))
    with open(skimage_data['captions_train']) as f:
        assert len(tsv) == len(json.load(f))
    assert osp.isfile(tsv.get_data_info(0)['img_path'])


def test_optimizer_constructor_groups():
    from mmengine.optim import build_optim_wrapper
    cfg = dict(
        constructor='visionllama_mm.LLaMAAdapterV2OptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(side_lr_mult=dict(language=10.0)))
    for phase in ('pretrain', 'finetune', 'joint'):
        model = build_tiny(phase=phase, fusion='early')
        wrapper = build_optim_wrapper(model, cfg)
        groups = wrapper.optimizer.param_groups
        params = [p for g in groups for p in g['params']]
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert len(params) == len(trainable)
        names = {id(p): n for n, p in model.named_parameters()}
        for g in groups:
            for p in g['params']:
                flat = p.ndim <= 1 or names[id(p)].endswith('.bias')
                assert g['weight_decay'] == (0.0 if flat else 0.05)
                if phase == 'joint':
                    assert g['side'] == model.param_side(names[id(p)])
                    assert g['lr'] == (1e-2
                                       if g['side'] == 'language' else 1e-3)
    # gates (4-D) and embeddings are decayed
    model = build_tiny(phase='pretrain')
    wrapper = build_optim_wrapper(model, cfg)
    decayed = {
        id(p)
        for g in wrapper.optimizer.param_groups if g['weight_decay'] > 0
        for p in g['params']
    }
    assert id(model.adapter_query.weight) in decayed
    assert id(model.llama.model.layers[1].self_attn.gate) in decayed


def _losses(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, f'no scalars.json under {work_dir}'
    with open(sorted(logs)[-1]) as f:
        rows = [json.loads(line) for line in f]
    return [r['loss'] for r in rows if 'loss' in r]


@pytest.mark.slow
def test_runner_trains_and_captions(tiny_cfg, tmp_path):
    """mmengine Runner: loss goes down, the checkpoint holds only the
    adapter, and testing from it writes captions."""
    from mmengine.runner import Runner

    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import \
        save_adapter_file
    cfg = copy.deepcopy(tiny_cfg)
    cfg.work_dir = str(tmp_path / 'train')
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = _losses(cfg.work_dir)
    assert len(losses) >= 4
    assert losses[-1] < losses[0]
    # the runner's checkpoint holds only the adapter-side tensors
    ckpt = torch.load(
        osp.join(cfg.work_dir, 'iter_30.pth'), weights_only=False)
    keys = set(ckpt['state_dict'])
    assert keys and not any(
        k.startswith(('clip.', 'llama.model.', 'llama.lm_head')) for k in keys)
    assert 'llama.layers.3.attention.gate' in keys
    adapter = str(tmp_path / 'adapter.pth')
    save_adapter_file(ckpt['state_dict'], adapter)

    test_cfg = copy.deepcopy(tiny_cfg)
    test_cfg.work_dir = str(tmp_path / 'test')
    test_cfg.load_from = adapter
    out = str(tmp_path / 'captions.pkl')
    test_cfg.test_evaluator.out_file_path = out
    Runner.from_cfg(test_cfg).test()
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == len(
        json.load(
            open(test_cfg.test_dataloader.dataset.data_root +
                 '/annotations/captions_val.json')))
    assert all(isinstance(p['pred_caption'], str) for p in preds)
    assert any(p['pred_caption'] for p in preds)


@pytest.mark.slow
def test_runner_joint_recipe_on_mixed_data(skimage_data, tmp_path):
    """The joint-training config (ConcatDataset of captions and
    instructions, text-only samples, per-side gradients) runs in the
    Runner; each side moves only when its kind of sample is present."""
    from mmengine.runner import Runner
    cfg = _shrink(
        Config.fromfile(
            osp.join(CONFIG_DIR,
                     'llama-adapter-v2_7b_8xb4-amp-3e_coco-alpaca-joint.py')),
        skimage_data)
    caption, instruction = cfg.train_dataloader.dataset.datasets
    caption.update(
        data_root=skimage_data['root'],
        ann_file='annotations/captions_train.json')
    instruction.update(
        data_root=skimage_data['root'],
        ann_file='annotations/instructions.json',
        data_prefix=dict(img_path=skimage_data['root']))
    cfg.train_dataloader.update(
        batch_size=4, num_workers=0, persistent_workers=False)
    cfg.optim_wrapper.type = 'OptimWrapper'  # CPU
    cfg.optim_wrapper.pop('loss_scale')
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.param_scheduler = None
    cfg.train_cfg = dict(by_epoch=False, max_iters=4)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=4, by_epoch=False)
    cfg.model_wrapper_cfg = None
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    before = {
        n: p.detach().clone()
        for n, p in runner.model.named_parameters() if p.requires_grad
    }
    runner.train()
    model = runner.model
    moved = {
        model.param_side(n)
        for n, p in model.named_parameters()
        if n in before and not torch.equal(p.detach(), before[n])
    }
    assert moved == {'visual', 'language'}
    assert torch.isfinite(
        torch.tensor(runner.message_hub.get_scalar('train/loss').current()))


def test_tools_train_then_test(skimage_data, tmp_path):
    work = str(tmp_path / 'work')
    opts = [f'{k}={v}' for k, v in tiny_overrides(skimage_data, work).items()]
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'), TINY_CONFIG, '--work-dir', work,
        '--cfg-options', *opts
    ],
                   check=True,
                   env=env,
                   cwd=str(tmp_path))
    losses = _losses(work)
    assert losses[-1] < losses[0]
    ckpt = osp.join(work, 'iter_30.pth')
    assert osp.isfile(ckpt)
    subprocess.run([
        sys.executable,
        osp.join(REPO, 'tools', 'test.py'), TINY_CONFIG, ckpt, '--work-dir',
        work, '--cfg-options', *opts
    ],
                   check=True,
                   env=env,
                   cwd=str(tmp_path))
    with open(osp.join(work, 'captions.pkl'), 'rb') as f:
        preds = pickle.load(f)
    assert preds and all(isinstance(p['pred_caption'], str) for p in preds)

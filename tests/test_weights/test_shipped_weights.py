"""Every shipped config that loads weights loads all of them, from the
released file itself; every model-zoo entry's weights have a loader.

For each config with a ``Pretrained`` init_cfg or a ``load_from``, an
official-format file of its arch is made (reduced depth, widths as
shipped, see ``weights_utils``), the config's model is built with the
config's init_cfg / load_from pointing at that file, ``init_weights()`` (or
mmengine's ``load_checkpoint``, what ``load_from`` runs) loads it, and every
tensor the config is meant to load must equal the file's. The metafile
entries with ``Weights`` load their released layout through a ``file://``
URL (the download route of ``get_model(name, pretrained=True)``).
"""
import os.path as osp

import pytest
import torch
from weights_utils import (ROOT, assert_loaded, build, loads_weights,
                           mae_epoch_checkpoint, module_at,
                           plain_deit_official, pyramid_official,
                           reduce_plain_backbone, shipped_configs,
                           weight_sources)

pytest.importorskip('mmpretrain')
pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402

MAE_SOURCES = {
    'base':
    'configs/mae_visionllama/mae_visionllama-base-p16_8xb512-amp-coslr-'
    '800e_in1k.py',
    'large':
    'configs/mae_visionllama/mae_visionllama-large-p16_8xb256-amp-coslr-'
    '800e_in1k.py',
    'tiny':
    'configs/mae_visionllama/mae_visionllama-tiny-p4_1xb32-coslr-10e_'
    'mnist5k-28px.py',
}
MAE_SOURCES.update(b=MAE_SOURCES['base'], l=MAE_SOURCES['large'])

# the adapter configs that start from a released file
ADAPTER_RELEASES = [
    'bias-7b_caption',
    'bias-7b_vqa',
    'lora-bias-7b_caption',
    'lora-bias-7b_vqa',
    'caption-7b_caption',
    'lora-bias-7b-v21_vqa',
]

# config -> kind of weights it loads
CASES = {
    **{
        p: 'mae'
        for p in [
            'configs/visionllama/visionllama-base-p16_mae800-pre_8xb128-'
            'lrd45-coslr-100e_in1k.py',
            'configs/visionllama/visionllama-base-p16_mae1600-pre_8xb128-'
            'lrd45-coslr-100e_in1k.py',
            'configs/visionllama/visionllama-large-p16_mae800-pre_8xb64-'
            'accum2-lrd45-coslr-50e_in1k.py',
            'configs/visionllama/visionllama-base-p16_mae800-pre_linear-'
            '8xb2048-coslr-90e_in1k.py',
            'configs/visionllama/visionllama-base-p16_mae1600-pre_linear-'
            '8xb2048-coslr-90e_in1k.py',
            'configs/visionllama/visionllama-large-p16_mae800-pre_linear-'
            '8xb2048-coslr-90e_in1k.py',
            'configs/upernet_visionllama/upernet_visionllama-base-p16-'
            'mae800_8xb2-amp-160k_ade20k-512x512.py',
            'configs/upernet_visionllama/upernet_visionllama-base-p16-'
            'mae1600_8xb2-amp-160k_ade20k-512x512.py',
            'configs/upernet_visionllama/upernet_visionllama-large-p16-'
            'mae800_8xb1-accum2-amp-160k_ade20k-512x512.py',
            'configs/vitdet_visionllama/vitdet_mask-rcnn_visionllama-base-'
            'p16-mae800_8xb4-accum2-lsj-36e_coco.py',
            'configs/vitdet_visionllama/vitdet_mask-rcnn_visionllama-large-'
            'p16-mae800_8xb4-accum2-lsj-36e_coco.py',
            'configs/mae_visionllama/visionllama-tiny-p4_mae10e-pre_1xb32-'
            'lrd65-coslr-5e_mnist5k-28px.py',
            'configs/mae_visionllama/visionllama-tiny-p4_mae10e-pre_linear-'
            '1xb32-coslr-5e_mnist5k-28px.py',
        ]
    },
    **{
        p: 'pyramid'
        for p in [
            'configs/upernet_visionllama/upernet_pyramid-visionllama-'
            f'{a}_8xb2-amp-160k_ade20k-512x512.py' for a in 'sbl'
        ] + [
            'configs/mask_rcnn_pyramid_visionllama/mask-rcnn_pyramid-'
            f'visionllama-{a}_fpn_amp-ms-crop-3x_coco.py' for a in 'sbl'
        ]
    },
    'configs/visionllama/visionllama-deit3-base-p16_deit3-192px-pre_8xb64-'
    'adamw-20e_in1k.py':
    'deit',
    'configs/visionllama/visionllama-deit3-large-p16_deit3-128px-pre_8xb64-'
    'adamw-20e_in1k.py':
    'deit',
    **{
        f'configs/llama_adapter_v2/llama-adapter-v2_{name}.py': 'adapter'
        for name in ADAPTER_RELEASES
    },
    # the instruction stage starts from the caption stage's runner file
    'configs/llama_adapter_v2/llama-adapter-v2_7b_8xb4-amp-4e_alpaca-llava-'
    'finetune.py':
    'adapter',
    'configs/llama_adapter_v2/llama-adapter-v2_llama2-7b_8xb4-fsdp-4e_alpaca-'
    'llava-multiturn-finetune.py':
    'adapter',
}

_cfg_cache = {}


def load_cfg(rel):
    if rel not in _cfg_cache:
        _cfg_cache[rel] = Config.fromfile(osp.join(ROOT, rel))
    return _cfg_cache[rel].copy()


def test_every_weight_loading_config_is_tested():
    loading = {rel for rel in shipped_configs() if loads_weights(rel)}
    assert loading == set(CASES), (
        f'untested: {sorted(loading - set(CASES))}; '
        f'no longer loading weights: {sorted(set(CASES) - loading)}')


# ---------------------------------------------------------------------------
# official-format files (one per arch, shared by the tests of this module)
# ---------------------------------------------------------------------------

_files = {}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('released')

    def get(kind, arch):
        key = (kind, str(arch))
        if key not in _files:
            folder = root / f'{kind}-{len(_files)}'
            folder.mkdir()
            _files[key] = MAKERS[kind](folder, arch)
        return _files[key]

    yield get
    _files.clear()


def _make_mae(folder, arch):
    """An MAE epoch file of the plain backbone ``arch`` ('tiny': the MNIST
    config's), at reduced depth; returns (path, state dict)."""
    cfg = load_cfg(MAE_SOURCES[arch])
    if arch != 'tiny':
        reduce_plain_backbone(cfg.model.backbone)
        cfg.model.neck.update(decoder_depth=1)
    ckpt = mae_epoch_checkpoint(build(cfg))
    path = str(folder / 'epoch_800.pth')
    torch.save(ckpt, path)
    return path, ckpt['state_dict']


def _make_pyramid(folder, arch):
    """``best_checkpoint.pth`` of pyramid ``arch``; (path, ckpt, spec)."""
    ckpt, spec = pyramid_official(arch)
    path = str(folder / 'best_checkpoint.pth')
    torch.save(ckpt, path)
    return path, ckpt, spec


MAKERS = {'mae': _make_mae, 'pyramid': _make_pyramid}


def _strip(state, prefix):
    return {
        k[len(prefix):]: v
        for k, v in state.items() if k.startswith(prefix)
    }


def _classifier_keys(state):
    """Official deit names -> mmpretrain ImageClassifier names."""
    return {
        ('head.fc.' + k[5:] if k.startswith('head.') else 'backbone.' + k): v
        for k, v in state.items() if k != 'pos_embed'
    }


# ---------------------------------------------------------------------------
# configs that load weights
# ---------------------------------------------------------------------------


def _adapter_model_cfg(cfg):
    from llama_adapter_helpers import tiny_model_cfg
    model_cfg = dict(cfg.model)
    model_cfg.update(tiny_model_cfg())
    model_cfg.pop('data_preprocessor', None)
    if model_cfg.get('w_lora'):
        model_cfg['lora_rank'] = 4
    return model_cfg


def _released_adapter_file(tmp_path, cfg, seed=1):
    """A released ``{'model', 'config'}`` file for the config's flags: the
    official names and layout, as :meth:`LLaMAAdapterV2.state_dict` writes
    them (checked against the released files' key list in
    tests/test_multimodal)."""
    from llama_adapter_helpers import randomize_adapters
    model_cfg = _adapter_model_cfg(cfg)
    src = randomize_adapters(build(cfg, model_cfg), seed=seed)
    state = {
        k: v.clone()
        for k, v in src.state_dict().items()
        if not k.startswith('data_preprocessor.')
    }
    path = str(tmp_path / 'LORA-BIAS-7B.pth')
    config = dict(
        w_bias=True,
        w_lora=bool(model_cfg.get('w_lora')),
        lora_rank=model_cfg.get('lora_rank', 16))
    if 'work_dirs' in str(cfg.get('load_from')):  # a runner checkpoint
        torch.save(dict(meta=dict(epoch=3), state_dict=state), path)
    else:
        torch.save(dict(model=state, config=config), path)
    return path, state, model_cfg


def _with_preprocessor(model, state):
    return {
        **state,
        **{
            'data_preprocessor.' + k: v
            for k, v in model.data_preprocessor.state_dict().items()
        }
    }


@pytest.mark.parametrize('rel', sorted(CASES))
def test_config_loads_every_tensor_of_the_released_file(rel, files, tmp_path):
    cfg = load_cfg(rel)
    kind = CASES[rel]
    sources = weight_sources(cfg)
    assert sources, f'{rel} loads no weights'
    if kind == 'adapter':
        assert sources[0][0] == 'load_from'
        path, state, model_cfg = _released_adapter_file(tmp_path, cfg)
        model = build(cfg, model_cfg)
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, path, map_location='cpu')  # what load_from does
        assert_loaded(model, _with_preprocessor(model, state))
        return
    ((_, where, init), ) = sources
    backbone = cfg.model.backbone
    if kind == 'mae':
        arch = backbone.get('arch', 'base')
        if isinstance(arch, str):
            reduce_plain_backbone(backbone)
        path, state = files('mae', arch if isinstance(arch, str) else 'tiny')
        expected = _strip(state, init.get('prefix') or '')
    elif kind == 'pyramid':
        path, ckpt, spec = files('pyramid', backbone.arch)
        backbone.arch = spec
        expected = dict(ckpt['model'])
    else:  # deit: the fine-tune loads the whole classifier
        reduce_plain_backbone(backbone)
        ckpt = plain_deit_official(backbone, cfg.model.head.num_classes)
        path = str(tmp_path / 'best_checkpoint.pth')
        torch.save(ckpt, path)
        expected = _classifier_keys(ckpt['model'])
    # the released file itself, as the config's checkpoint
    module_cfg = cfg.model if where == 'model' else \
        module_at(cfg.model, where)
    module_cfg.init_cfg.checkpoint = path
    model = build(cfg)
    module = module_at(model, where)
    # what model.init_weights() runs for the module with the init_cfg
    module.init_weights()
    assert_loaded(module, expected, getattr(module, 'checkpoint_new_keys', ()))


# ---------------------------------------------------------------------------
# model-zoo entries with released weights
# ---------------------------------------------------------------------------


def _records():
    from visionllama_mm.zoo import model_records
    return [
        r for r in model_records(osp.join(ROOT, 'model-index.yml'))
        if r['weights']
    ]


FAMILIES = {
    'MAE-VisionLLaMA': 'mae',
    'Pyramid-VisionLLaMA': 'pyramid',
    'DiT-LLaMA': 'dit',
    'SiT-LLaMA': 'dit',
    'LLaMA-Adapter-V2': 'adapter',
}


def test_every_released_weights_entry_has_a_loader():
    unknown = [(r['name'], r['collection']) for r in _records()
               if r['collection'] not in FAMILIES]
    assert not unknown, f'entries with weights no test loads: {unknown}'


DIT_SIZES = {'S': (384, 6), 'B': (768, 12), 'L': (1024, 16), 'XL': (1152, 16)}


def _entry_file(rec, cfg, files, tmp_path):
    """(model config, official file, expected model state) of an entry."""
    family = FAMILIES[rec['collection']]
    if family == 'mae':
        arch = cfg.model.backbone.arch
        reduce_plain_backbone(cfg.model.backbone)
        cfg.model.neck.update(decoder_depth=1)
        path, state = files('mae', arch)
        return cfg.model, path, {
            k: v
            for k, v in state.items() if k != 'backbone.pos_embed'
        }
    if family == 'pyramid':
        path, ckpt, spec = files('pyramid', cfg.model.backbone.arch)
        cfg.model.backbone.arch = spec
        return cfg.model, path, _classifier_keys(ckpt['model'])
    if family == 'dit':
        from gen_reference import official_checkpoint
        name = cfg.model.arch  # e.g. DiTLLaMA_XL_2
        size, patch = name.split('_')[1], int(name.split('_')[2])
        dim, heads = DIT_SIZES[size]
        cfg.model.vae = None
        cfg.model.arch = dict(
            depth=1, hidden_size=dim, patch_size=patch, num_heads=heads)
        net_cfg = cfg.model.net_cfg
        ckpt = official_checkpoint(
            name,
            depth=1,
            dim=dim,
            patch=patch,
            num_classes=net_cfg.num_classes,
            learn_sigma=net_cfg.learn_sigma,
            grid=net_cfg.input_size // patch)
        path = str(tmp_path / '0400000.pt')
        torch.save(ckpt, path)
        expected = {
            'net.' + k: v
            for k, v in ckpt['ema'].items() if k != 'pos_embed'
        }
        return cfg.model, path, expected
    path, state, model_cfg = _released_adapter_file(tmp_path, cfg)
    return model_cfg, path, state


@pytest.mark.parametrize('name', sorted(r['name'] for r in _records()))
def test_zoo_entry_loads_its_released_file_by_url(name, files, tmp_path,
                                                  monkeypatch):
    """``file://`` goes through the download cache, as ``https://`` does."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    from mmengine.runner import load_checkpoint
    (rec, ) = [r for r in _records() if r['name'] == name]
    cfg = Config.fromfile(rec['config'])
    model_cfg, path, expected = _entry_file(rec, cfg, files, tmp_path)
    model = build(cfg, model_cfg)
    load_checkpoint(model, 'file://' + path, map_location='cpu')
    assert_loaded(model, _with_preprocessor(model, expected))
    assert osp.isfile(
        osp.join(tmp_path, 'torch_home', 'hub', 'checkpoints',
                 osp.basename(path)))


def test_get_model_pretrained_true_downloads_and_converts(
        tmp_path, monkeypatch):
    """``mmpretrain.get_model(name, pretrained=True)`` with a zoo entry whose
    ``Weights`` is the released file (here a ``file://`` URL)."""
    import yaml
    from mmpretrain import get_model

    from visionllama_mm import zoo
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    config = osp.join(ROOT, 'configs', 'pyramid_visionllama',
                      'pyramid-visionllama-s_8xb128_in1k.py')
    ckpt, spec = pyramid_official('small', num_classes=1000)
    path = tmp_path / 'best_checkpoint.pth'
    torch.save(ckpt, path)
    index = tmp_path / 'model-index.yml'
    index.write_text(
        yaml.safe_dump(
            dict(Models=[
                dict(
                    Name='weights-test-pyramid-s',
                    Config=config,
                    Weights=path.as_uri(),
                    Results=[
                        dict(
                            Task='Image Classification',
                            Dataset='ImageNet-1k',
                            Metrics={'Top 1 Accuracy': 81.6})
                    ])
            ])))
    monkeypatch.setattr(zoo, '_registered', {})
    zoo.register_mmpretrain_models(str(index))

    def small():  # merge_from_dict consumes _delete_
        return dict(backbone=dict(arch=dict(spec, _delete_=True)))

    model = get_model('weights-test-pyramid-s', pretrained=True, **small())
    assert_loaded(model, _classifier_keys(ckpt['model']))
    assert osp.isfile(tmp_path / 'torch_home' / 'hub' / 'checkpoints' /
                      'best_checkpoint.pth')
    # and a local path or a URL as pretrained=
    again = get_model(
        'weights-test-pyramid-s', pretrained=str(path), **small())
    torch.testing.assert_close(again.head.fc.bias, ckpt['model']['head.bias'])

"""Loads for inference are strict: the OpenMMLab inferencers and
``init_model`` helpers, and this repository's sampling / analysis tools,
refuse a checkpoint that leaves a tensor of one of our models unfilled or
holds tensors the model does not use (tiny models, files made from them)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from weights_utils import ROOT

from visionllama_mm.weights import (INFERENCE_APIS, CheckpointMismatchError,
                                    allow_partial_load, load_strict)

QS = osp.join(ROOT, 'configs', 'quickstart')
CLS = osp.join(QS, 'visionllama-tiny-p7_1xb64-adamw-12e_mnist5k-28px.py')
SEG = osp.join(QS,
               'upernet_pyramid-visionllama-tiny_1xb4-1k_nuclei-128x128.py')
DET = osp.join(
    QS, 'mask-rcnn_pyramid-visionllama-tiny_fpn_1xb2-1k_nuclei-256x256.py')
GEN = osp.join(ROOT, 'configs', 'sit_llama',
               'sit-llama-tiny_1xb32-3k_mnist5k-28.py')
MAE = osp.join(ROOT, 'configs', 'mae_visionllama',
               'mae_visionllama-tiny-p4_1xb32-coslr-10e_mnist5k-28px.py')


def _build(config, scope):
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    model_cfg = dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    elif scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        import visionllama_mm.generation  # noqa: F401
        from visionllama_mm.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        return MODELS.build(model_cfg)


def _files(model, tmp_path):
    """(full, missing one tensor, with an unused tensor) checkpoint files,
    and the name of the dropped tensor."""
    state = model.state_dict()
    dropped = [k for k in state if k.endswith('.weight')][-1]
    paths = {}
    for kind in ('full', 'missing', 'unused'):
        sd = dict(state)
        if kind == 'missing':
            del sd[dropped]
        elif kind == 'unused':
            sd['extra.weight'] = torch.zeros(3)
        paths[kind] = str(tmp_path / f'{kind}.pth')
        torch.save({'state_dict': sd, 'meta': {}}, paths[kind])
    return paths, dropped


def _check_strict(load, paths, dropped):
    """``load(path)`` fits the full file and refuses both mismatches."""
    load(paths['full'])
    with pytest.raises(CheckpointMismatchError) as err:
        load(paths['missing'])
    assert paths['missing'] in str(err.value)
    assert dropped in str(err.value)
    with pytest.raises(CheckpointMismatchError, match='extra.weight'):
        load(paths['unused'])


# ---------------------------------------------------------------------------
# the rule itself (no library imported)
# ---------------------------------------------------------------------------


def _call_from(module_name, func, *args):
    """Run ``func(*args)`` from a frame whose module is ``module_name``."""
    ns = {'__name__': module_name, 'func': func, 'args': args}
    exec('def run():\n    return func(*args)\n', ns)
    return ns['run']()


def test_loads_started_by_an_inference_api_are_strict(tmp_path):
    from mmengine.runner import load_checkpoint

    from visionllama_mm.backbones import VisionLLaMA
    model = VisionLLaMA(
        arch=dict(
            embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        img_size=28,
        patch_size=7,
        in_channels=1)
    paths, dropped = _files(model, tmp_path)
    # elsewhere (training, fine-tuning): unused file tensors are allowed
    load_checkpoint(model, paths['unused'])
    for api in INFERENCE_APIS:

        def load(path, module=api + '.inferencer'):
            return _call_from(module, load_checkpoint, model, path)

        _check_strict(load, paths, dropped)
    # the module name must match as a whole
    _call_from('mmsegx.apis', load_checkpoint, model, paths['unused'])
    # an explicit partial load still wins
    with allow_partial_load():
        _call_from('mmseg.apis', load_checkpoint, model, paths['missing'])
    # other libraries' models keep mmengine's behaviour
    linear = torch.nn.Linear(2, 2)
    path = str(tmp_path / 'linear.pth')
    torch.save({'state_dict': {'weight': torch.ones(2, 2)}}, path)
    _call_from('mmdet.apis', load_checkpoint, linear, path)
    torch.testing.assert_close(linear.weight, torch.ones(2, 2))


# ---------------------------------------------------------------------------
# the inferencers and init helpers users call with our configs
# ---------------------------------------------------------------------------


def test_mmpretrain_inferencer_and_get_model(tmp_path):
    pytest.importorskip('mmpretrain')
    from mmpretrain import ImageClassificationInferencer, get_model
    paths, dropped = _files(_build(CLS, 'mmpretrain'), tmp_path)
    _check_strict(lambda p: ImageClassificationInferencer(CLS, pretrained=p),
                  paths, dropped)
    _check_strict(lambda p: get_model(CLS, pretrained=p), paths, dropped)


def test_mmseg_inferencer_and_init_model(tmp_path):
    pytest.importorskip('mmseg')
    from mmseg.apis import MMSegInferencer, init_model
    paths, dropped = _files(_build(SEG, 'mmseg'), tmp_path)
    _check_strict(
        lambda p: MMSegInferencer(model=SEG, weights=p, device='cpu'), paths,
        dropped)
    _check_strict(lambda p: init_model(SEG, p, device='cpu'), paths, dropped)


def test_mmdet_inferencer_and_init_detector(tmp_path):
    pytest.importorskip('mmdet')
    from mmdet.apis import DetInferencer, init_detector
    paths, dropped = _files(_build(DET, 'mmdet'), tmp_path)
    _check_strict(lambda p: DetInferencer(model=DET, weights=p, device='cpu'),
                  paths, dropped)
    _check_strict(lambda p: init_detector(DET, p, device='cpu'), paths,
                  dropped)


def test_mmagic_init_model(tmp_path):
    """mmagic's ``init_model`` (what its inferencers build on). The module is
    executed from its file under its own name: ``mmagic.apis/__init__``
    imports every inferencer's optional dependencies (controlnet_aux ->
    mediapipe), which need not all work where our models do."""
    mmagic = pytest.importorskip('mmagic')
    name = 'mmagic.apis.inferencers.inference_functions'
    spec = importlib.util.spec_from_file_location(
        name,
        osp.join(
            osp.dirname(mmagic.__file__), 'apis', 'inferencers',
            'inference_functions.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    init_model = module.init_model
    paths, dropped = _files(_build(GEN, 'visionllama_mm'), tmp_path)
    _check_strict(lambda p: init_model(GEN, p, device='cpu'), paths, dropped)


# ---------------------------------------------------------------------------
# this repository's tools
# ---------------------------------------------------------------------------


def _tool(rel):
    spec = importlib.util.spec_from_file_location(
        '_strict_' + osp.basename(rel)[:-3], osp.join(ROOT, rel))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_tool_is_strict(tmp_path):
    sample = _tool('tools/sample.py')
    paths, dropped = _files(_build(GEN, 'visionllama_mm'), tmp_path)
    _check_strict(
        lambda p: sample.load_weights(_build(GEN, 'visionllama_mm'), p), paths,
        dropped)
    # exits non-zero from the command line
    with pytest.raises(CheckpointMismatchError):
        sample.main([
            GEN, paths['unused'], '--out-dir',
            str(tmp_path / 'out'), '--num-samples', '1', '--device', 'cpu'
        ])


def test_mae_reconstruction_tool_is_strict(tmp_path):
    pytest.importorskip('mmpretrain')
    recon = _tool('tools/analysis_tools/mae_reconstruction.py')
    paths, dropped = _files(_build(MAE, 'mmpretrain'), tmp_path)
    for kind in ('missing', 'unused'):
        with pytest.raises(CheckpointMismatchError):
            recon.main([
                MAE, paths[kind], '--out',
                str(tmp_path / 'grid.png'), '--num-images', '1'
            ])


def test_resolution_sweep_loads_strictly(tmp_path):
    pytest.importorskip('mmpretrain')
    from visionllama_mm.analysis.resolution import build_classifier
    cfg = Config.fromfile(CLS)
    model = _build(CLS, 'mmpretrain')
    state = model.state_dict()
    built = build_classifier(cfg, state, {})
    torch.testing.assert_close(built.state_dict(), state)
    with pytest.raises(CheckpointMismatchError, match='extra.weight'):
        build_classifier(cfg, dict(state, **{'extra.weight': torch.ones(1)}),
                         {})


def test_load_strict_converts_released_files(tmp_path):
    """``load_strict`` is mmengine's loading: a released pyramid file
    converts, and fills the classifier."""
    from weights_utils import pyramid_official
    pytest.importorskip('mmpretrain')
    ckpt, spec = pyramid_official('small', num_classes=10)
    path = str(tmp_path / 'best_checkpoint.pth')
    torch.save(ckpt, path)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='visionllama_mm.PyramidVisionLLaMA', arch=spec),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(
                    type='LinearClsHead',
                    num_classes=10,
                    in_channels=spec['embed_dims'][-1])))
    load_strict(model, path)
    torch.testing.assert_close(model.head.fc.bias, ckpt['model']['head.bias'])

"""Loading checkpoints through mmengine: released layouts convert, partial
loads are errors unless asked for, tools/test.py is strict and --resume
names a non-runner file."""
import argparse
import importlib.util
import logging
import os.path as osp

import pytest
import torch
from weights_utils import ROOT, deit_container

from visionllama_mm.backbones import PyramidVisionLLaMADET
from visionllama_mm.weights import (PARTIAL_ENV, CheckpointMismatchError,
                                    allow_partial_load,
                                    check_resume_checkpoint,
                                    convert_official_checkpoint,
                                    detect_official_layout, strict_load)

TINY = dict(
    embed_dims=[32, 64, 96, 128],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 3, 4],
    window_sizes=[7, 7, 7, 7],
    sr_ratios=[8, 4, 2, 1])


def _pyramid_file(tmp_path, seed=0, name='best_checkpoint.pth'):
    import pyramid_reference as ref
    state = ref.arch_state_dict(TINY, seed=seed)
    path = str(tmp_path / name)
    torch.save(deit_container(state, 'pllama_wols_small_patch16'), path)
    return path, state


def _dense(path, prefix='backbone.'):
    init = dict(type='Pretrained', checkpoint=path)
    if prefix is not None:
        init['prefix'] = prefix
    return PyramidVisionLLaMADET(TINY, init_cfg=init)


def test_layouts_are_recognised():
    from gen_reference import official_checkpoint
    sd = {'patch_embeds.0.proj.weight': torch.zeros(1)}
    assert detect_official_layout({'model': sd}) == 'pyramid-deit'
    plain = {'patch_embed.proj.weight': torch.zeros(1), 'blocks.0.x': 0}
    assert detect_official_layout({'model': plain}) == 'plain-deit'
    tiny = dict(depth=1, dim=32, patch=2, grid=4, num_classes=10)
    assert detect_official_layout(official_checkpoint('SiTLLaMA_S_2',
                                                      **tiny)) == 'dit'
    assert detect_official_layout({
        'model': {
            'llma.norm.weight': 0
        },
        'config': {}
    }) == 'llama-adapter-v2'
    # ours / runner checkpoints and bare state dicts pass unchanged
    for ckpt in ({'state_dict': sd}, sd, {'meta': {}}, [1]):
        assert detect_official_layout(ckpt) is None
        assert convert_official_checkpoint(ckpt) is ckpt


def test_sit_file_converts_to_the_registered_model():
    from gen_reference import official_checkpoint
    ckpt = official_checkpoint(
        'SiTLLaMA_S_2', depth=1, dim=32, patch=2, grid=4, num_classes=10)
    out = convert_official_checkpoint(ckpt, source='x.pt')
    assert out['meta']['official_layout'] == 'dit'
    assert out['meta']['model'] == 'SiTLLaMA_S_2'
    assert 'net.pos_embed' not in out['state_dict']
    torch.testing.assert_close(
        out['state_dict']['net.blocks.0.attn.qkv.weight'],
        ckpt['ema']['blocks.0.attn.qkv.weight'])


def test_missing_prefix_is_an_error_that_names_the_fix(tmp_path):
    """The former pyramid dense configs: no prefix, 0 tensors loaded."""
    path, _ = _pyramid_file(tmp_path)
    # a converted mmengine file with backbone.* keys, no prefix in init_cfg
    converted = str(tmp_path / 'converted.pth')
    torch.save(
        convert_official_checkpoint(torch.load(path, weights_only=False)),
        converted)
    model = _dense(converted, prefix=None)
    with pytest.raises(CheckpointMismatchError) as err:
        model.init_weights()
    msg = str(err.value)
    assert converted in msg
    n = len([k for k in model.state_dict() if not k.startswith('norm_list')])
    assert f'0 of its {n} expected tensors matched (8 more are new' in msg
    assert "model keys not in the checkpoint" in msg
    assert "'backbone.patch_embeds.0.proj.weight'" in msg
    assert "set prefix='backbone.'" in msg
    assert 'allow_partial_load' in msg


def test_new_by_design_keys_do_not_count(tmp_path):
    path, state = _pyramid_file(tmp_path)
    model = _dense(path)
    model.init_weights()  # norm_list is new: no error
    torch.testing.assert_close(model.blocks[3][1].attn.kv.weight,
                               state['blocks.3.1.attn.kv.weight'])
    # strict loading (evaluation) counts them
    with strict_load(), pytest.raises(
            CheckpointMismatchError, match='norm_list'):
        _dense(path).init_weights()


def test_partial_load_on_purpose(tmp_path, monkeypatch, caplog):
    path, state = _pyramid_file(tmp_path)
    raw = torch.load(path, weights_only=False)
    del raw['model']['blocks.2.1.attn.q.weight']
    torch.save(raw, path)
    with pytest.raises(
            CheckpointMismatchError, match=r'blocks\.2\.1\.attn\.q\.weight'):
        _dense(path).init_weights()
    model = _dense(path)
    with allow_partial_load():
        model.init_weights()
    torch.testing.assert_close(model.blocks[2][1].attn.kv.weight,
                               state['blocks.2.1.attn.kv.weight'])
    monkeypatch.setenv(PARTIAL_ENV, '1')
    _dense(path).init_weights()


def test_partial_load_warning_goes_to_the_run_log(tmp_path):
    from mmengine.logging import MMLogger
    path, _ = _pyramid_file(tmp_path)
    raw = torch.load(path, weights_only=False)
    del raw['model']['blocks.0.0.attn.qkv.bias']
    torch.save(raw, path)
    log_file = str(tmp_path / 'run.log')
    logger = MMLogger.get_instance(
        'weights_test_run', log_file=log_file, log_level=logging.INFO)
    with allow_partial_load():
        _dense(path).init_weights()
    for handler in logger.handlers:
        handler.flush()
    with open(log_file) as f:
        text = f.read()
    assert 'blocks.0.0.attn.qkv.bias' in text and path in text


def test_another_size_is_an_error(tmp_path):
    path, _ = _pyramid_file(tmp_path)
    wider = dict(TINY, embed_dims=[32, 64, 96, 160], num_heads=[1, 2, 3, 5])
    model = PyramidVisionLLaMADET(
        wider,
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match='another shape'):
        model.init_weights()


def test_other_libraries_models_keep_mmengine_behaviour(tmp_path):
    from mmengine.runner import load_checkpoint
    path = str(tmp_path / 'w.pth')
    torch.save({'state_dict': {'weight': torch.ones(2, 2)}}, path)
    layer = torch.nn.Linear(2, 2)
    load_checkpoint(layer, path)  # bias missing: a warning, as before
    torch.testing.assert_close(layer.weight, torch.ones(2, 2))
    with strict_load(), pytest.raises(CheckpointMismatchError, match="'bias'"):
        load_checkpoint(layer, path)


def test_released_pyramid_file_via_local_path_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'home'))
    path, state = _pyramid_file(tmp_path)
    for source in (path, 'file://' + path):
        model = PyramidVisionLLaMADET(
            TINY,
            init_cfg=dict(
                type='Pretrained', checkpoint=source, prefix='backbone.'))
        model.init_weights()
        torch.testing.assert_close(model.patch_embeds[0].proj.weight,
                                   state['patch_embeds.0.proj.weight'])
    assert osp.isfile(tmp_path / 'home' / 'hub' / 'checkpoints' /
                      'best_checkpoint.pth')


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'_weights_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_with_a_weights_file_says_so(tmp_path):
    path, _ = _pyramid_file(tmp_path)
    with pytest.raises(
            ValueError,
            match='released pyramid-deit file.*not a '
            'checkpoint written by the runner'):
        check_resume_checkpoint(path)
    plain = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': {'a': torch.zeros(1)}}, plain)
    with pytest.raises(ValueError, match='use load_from'):
        check_resume_checkpoint(plain)
    runner_ckpt = str(tmp_path / 'epoch_1.pth')
    torch.save({'meta': {'epoch': 1}, 'state_dict': {}}, runner_ckpt)
    check_resume_checkpoint(runner_ckpt)  # fine
    # through tools/train.py's argument handling
    from mmengine.config import Config
    train = _load_tool('train')
    cfg = Config(dict(model=dict(type='x'), work_dir=str(tmp_path)))
    args = train.parse_args(['cfg.py', '--resume', path])
    with pytest.raises(ValueError, match='--resume'):
        train.merge_args(cfg, args)


def test_test_tool_refuses_a_checkpoint_of_another_model(tmp_path):
    import sys
    sys.path.insert(0, osp.join(ROOT, 'tests', 'data'))
    path, _ = _pyramid_file(tmp_path)
    test = _load_tool('test')
    config = osp.join(ROOT, 'tests', 'data', 'configs',
                      'toy_classification.py')
    with pytest.raises(CheckpointMismatchError, match=path):
        test.main([config, path, '--work-dir', str(tmp_path / 'w')])


def test_convert_meta_is_plain(tmp_path):
    path, _ = _pyramid_file(tmp_path)
    out = convert_official_checkpoint(
        torch.load(path, weights_only=False), source=path)
    assert out['meta']['official_layout'] == 'pyramid-deit'
    assert out['meta']['upstream_model'] == 'pllama_wols_small_patch16'
    dst = str(tmp_path / 'out.pth')
    torch.save(out, dst)
    torch.load(dst, weights_only=True)  # tensors and plain values only
    assert isinstance(out['meta']['epoch'], int)
    assert not any(
        isinstance(v, argparse.Namespace) for v in out['meta'].values())


def test_sample_tool_reads_released_files_and_urls(tmp_path, monkeypatch):
    from gen_reference import official_checkpoint

    import visionllama_mm.generation  # noqa: F401  (registers the models)
    from visionllama_mm.registry import MODELS
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'home'))
    ckpt = official_checkpoint(
        'DiTLLaMA_B_4', depth=1, dim=32, patch=2, grid=4, num_classes=10)
    path = str(tmp_path / '0400000.pt')
    torch.save(ckpt, path)
    sample = _load_tool('sample')
    for source in (path, 'file://' + path):
        model = MODELS.build(
            dict(
                type='DiTLLaMA',
                arch=dict(depth=1, hidden_size=32, patch_size=2, num_heads=2),
                net_cfg=dict(input_size=8, num_classes=10)))
        sample.load_weights(model, source)
        torch.testing.assert_close(model.net.blocks[0].attn.qkv.weight,
                                   ckpt['ema']['blocks.0.attn.qkv.weight'])

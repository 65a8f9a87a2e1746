"""tools/misc/update_metafiles.py: counts, text updates, --check."""
import os.path as osp

import pytest
import torch
import yaml
from zoo_utils import INDEX, copy_fixture, load_tool, toy_vit_counts

pytest.importorskip('mmpretrain')

um = load_tool('tools/misc/update_metafiles.py')


def _run(index, *extra):
    return um.main(['--model-index', index, '--quiet'] + list(extra))


def _models(index):
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    return {m['Name']: m for m in yaml.safe_load(open(meta))['Models']}


def test_counts_match_hand_formulas(tmp_path):
    index = copy_fixture(tmp_path)
    assert _run(index) == 0
    models = _models(index)
    params, macs = toy_vit_counts(img=32, classes=10)
    assert models['toy-vit_in1k']['Metadata']['Parameters'] == params
    assert models['toy-vit_in1k']['Metadata']['FLOPs'] == macs
    # 48 px test crop from the config's pipeline, 20 classes
    params, macs = toy_vit_counts(img=48, classes=20)
    assert models['toy-vit-wide_in1k']['Metadata']['Parameters'] == params
    assert models['toy-vit-wide_in1k']['Metadata']['FLOPs'] == macs


def test_text_update_keeps_comments_and_layout(tmp_path):
    index = copy_fixture(tmp_path)
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    before = open(meta).read()
    assert _run(index) == 0
    after = open(meta).read()
    assert '# computed by tools/misc/update_metafiles.py' in after
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines())
               if a != b]
    # the first model's two placeholders were replaced in place; the second
    # model got both fields inserted after "Metadata:"
    assert [a.split(':')[0].strip() for a, _ in changed[:2]] == \
        ['FLOPs', 'Parameters']
    assert len(after.splitlines()) == len(before.splitlines()) + 2
    data = yaml.safe_load(after)
    assert data['Models'][1]['Metadata']['Unverified'] == ['Top 1 Accuracy']


def test_render_metafile_inserts_and_replaces():
    text = ('Collections: []\nModels:\n  - Name: a\n    Metadata:\n'
            '      Training Data: x\n    Config: a.py\n  - Name: b\n'
            '    Metadata:\n      FLOPs: 1\n      Parameters: 2  \n'
            '    Config: b.py\n')
    out = um.render_metafile(
        text,
        dict(a=dict(parameters=5, flops=None), b=dict(parameters=7, flops=9)))
    data = yaml.safe_load(out)
    assert data['Models'][0]['Metadata'] == {
        'Parameters': 5,
        'FLOPs': None,
        'Training Data': 'x'
    }
    assert data['Models'][1]['Metadata'] == {'FLOPs': 9, 'Parameters': 7}


def test_check_reports_drift_with_a_diff(tmp_path, capsys):
    index = copy_fixture(tmp_path)
    assert _run(index, '--check') == 1  # placeholders: stale
    assert _run(index) == 0
    assert _run(index, '--check') == 0
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    params, _ = toy_vit_counts(img=32, classes=10)
    text = open(meta).read()
    open(meta, 'w').write(
        text.replace(f'Parameters: {params}', 'Parameters: 123', 1))
    capsys.readouterr()
    assert _run(index, '--check') == 1
    out = capsys.readouterr().out
    assert '-      Parameters: 123' in out
    assert f'+      Parameters: {params}' in out
    # --check wrote nothing
    assert 'Parameters: 123' in open(meta).read()


def test_missing_config_is_an_error(tmp_path):
    index = copy_fixture(tmp_path)
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    text = open(meta).read().replace('toy-vit_in1k.py', 'nope.py')
    open(meta, 'w').write(text)
    with pytest.raises(FileNotFoundError, match='nope.py'):
        _run(index, '--check')


@pytest.mark.slow
def test_repository_metafiles_are_in_step():
    """The shipped metafiles hold the tool's numbers (minutes: all models)."""
    assert um.main(['--model-index', INDEX, '--check', '--quiet']) == 0


def test_visionllama_counts_on_meta_match_hand_formulas():
    """Built under torch.device('meta'): RoPE tables need no autocast."""
    from visionllama_mm.backbones import VisionLLaMA
    c, layers, ffc, patch, img = 32, 2, 64, 8, 32
    with torch.device('meta'):
        model = VisionLLaMA(
            arch=dict(
                embed_dims=c,
                num_layers=layers,
                num_heads=2,
                feedforward_channels=ffc),
            img_size=img,
            patch_size=patch).eval()
    model.requires_grad_(False)
    hidden = 256  # ceil256(8/3 * ffc), the 'mmpretrain' SwiGLU rule
    n = (img // patch)**2
    params = (3 * patch * patch * c + c + layers *
              (2 * 2 * c + c * 3 * c + 3 * c + c * c + c + c * 2 * hidden +
               2 * hidden + hidden * c + c) + 2 * 2 * c)
    macs = (
        n * c * 3 * patch * patch + layers *
        (n * c * 3 * c + 2 * n * n * c + n * c * c + n * c * 3 * hidden))
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.empty(1, 3, img, img, device='meta')
    assert um.count_macs(lambda: model(x)) == macs


def test_diffusion_schedule_is_real_under_meta_default_device():
    from visionllama_mm.generation.diffusion import create_diffusion
    with torch.device('meta'):
        on_meta = create_diffusion('250')
    ref = create_diffusion('250')
    assert on_meta.betas.device.type == 'cpu'
    assert torch.equal(on_meta.betas, ref.betas)
    assert torch.equal(on_meta.timestep_map, ref.timestep_map)
    assert on_meta.timestep_map[:3].tolist() == [0, 4, 8]


def test_render_metafile_adapter_fields_and_comments():
    text = ('Models:\n  - Name: a\n    Metadata:\n      # note\n'
            '      Parameters: 1\n\n      Training Data: x\n'
            '    Config: a.py\nOther:\n  - Name: a\n    Metadata:\n'
            '      Parameters: 1\n')
    out = um.render_metafile(
        text, {'a': dict(parameters=5, flops=None, adapter_parameters=3)})
    assert out.splitlines() == [
        'Models:', '  - Name: a', '    Metadata:', '      FLOPs: null',
        '      Adapter Parameters: 3', '      # note', '      Parameters: 5',
        '', '      Training Data: x', '    Config: a.py', 'Other:',
        '  - Name: a', '    Metadata:', '      Parameters: 1'
    ]

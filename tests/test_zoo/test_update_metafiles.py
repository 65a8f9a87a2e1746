"""tools/misc/update_metafiles.py: counts, text updates, cache, --check."""
import os.path as osp

import pytest
import yaml
from zoo_utils import INDEX, ROOT, copy_fixture, load_tool, toy_vit_counts

pytest.importorskip('mmpretrain')

um = load_tool('tools/misc/update_metafiles.py')


def _run(index, *extra, cache=None):
    args = ['--model-index', index, '--quiet']
    args += ['--cache', cache] if cache else []
    return um.main(args + list(extra))


def _models(index):
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    return {m['Name']: m for m in yaml.safe_load(open(meta))['Models']}


def test_counts_match_hand_formulas(tmp_path):
    index = copy_fixture(tmp_path)
    cache = str(tmp_path / 'cache.json')
    assert _run(index, cache=cache) == 0
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
    assert _run(index, cache=str(tmp_path / 'c.json')) == 0
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
    cache = str(tmp_path / 'cache.json')
    assert _run(index, cache=cache) == 0
    assert _run(index, '--check', cache=cache) == 0
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    params, _ = toy_vit_counts(img=32, classes=10)
    text = open(meta).read()
    open(meta, 'w').write(
        text.replace(f'Parameters: {params}', 'Parameters: 123', 1))
    capsys.readouterr()
    assert _run(index, '--check', cache=cache) == 1
    out = capsys.readouterr().out
    assert '-      Parameters: 123' in out
    assert f'+      Parameters: {params}' in out
    # --check wrote nothing
    assert 'Parameters: 123' in open(meta).read()


def test_cache_hits_and_invalidation(tmp_path, monkeypatch):
    index = copy_fixture(tmp_path)
    cache = str(tmp_path / 'cache.json')
    assert _run(index, cache=cache) == 0
    calls = []
    real = um.compute_stats

    def spy(config):
        calls.append(osp.basename(config))
        return real(config)

    monkeypatch.setattr(um, 'compute_stats', spy)
    assert _run(index, '--check', cache=cache) == 0
    assert calls == []  # everything from the cache
    # editing the shared base invalidates both configs
    base = osp.join(osp.dirname(index), 'configs', 'toy', 'toy_base.py')
    with open(base, 'a') as f:
        f.write('# touched\n')
    assert _run(index, '--check', cache=cache) == 0
    assert sorted(calls) == ['toy-vit-wide_in1k.py', 'toy-vit_in1k.py']
    # editing one child invalidates that one only
    calls.clear()
    assert _run(index, cache=cache) == 0  # refresh the cache
    calls.clear()
    child = osp.join(osp.dirname(index), 'configs', 'toy', 'toy-vit_in1k.py')
    with open(child, 'a') as f:
        f.write('# touched\n')
    assert _run(index, '--check', cache=cache) == 0
    assert calls == ['toy-vit_in1k.py']


def test_fingerprint_follows_package_sources(tmp_path):
    dep = tmp_path / 'mod.py'
    dep.write_text('x = 1\n')
    config = osp.join(ROOT, 'tests', 'test_zoo', 'data', 'configs', 'toy',
                      'toy-vit_in1k.py')
    rel = osp.relpath(str(dep), ROOT)
    first = um.fingerprint(config, [rel])
    assert um.fingerprint(config, [rel]) == first
    dep.write_text('x = 2\n')
    assert um.fingerprint(config, [rel]) != first


def test_missing_config_is_an_error(tmp_path):
    index = copy_fixture(tmp_path)
    meta = osp.join(osp.dirname(index), 'configs', 'toy', 'metafile.yml')
    text = open(meta).read().replace('toy-vit_in1k.py', 'nope.py')
    open(meta, 'w').write(text)
    with pytest.raises(FileNotFoundError, match='nope.py'):
        _run(index, '--check', cache=str(tmp_path / 'c.json'))


def test_repository_metafiles_are_in_step():
    """The shipped metafiles hold the tool's numbers (cached: fast)."""
    assert um.main(['--model-index', INDEX, '--check', '--quiet']) == 0

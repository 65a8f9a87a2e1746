"""tools/misc/gen_model_zoo.py: README tables from the metafiles."""
import os.path as osp

from zoo_utils import INDEX, copy_fixture, load_tool

gmz = load_tool('tools/misc/gen_model_zoo.py')


def test_writes_tables_between_markers(tmp_path):
    index = copy_fixture(tmp_path)
    repo = osp.dirname(index)
    readme = osp.join(repo, 'README.md')
    with open(readme, 'w') as f:
        f.write('# Project\n\nIntro.\n')
    assert gmz.main(['--model-index', index]) == 0
    text = open(readme).read()
    assert text.startswith('# Project\n\nIntro.\n\n## Model zoo\n')
    block = text.split(gmz.START)[1].split(gmz.END)[0]
    assert '| toy-vit_in1k | Image Classification | ImageNet-1k | ' \
        'Top 1 Accuracy 84.0 |' in block
    # unverified numbers are starred; links are relative to the README
    assert 'Top 1 Accuracy 50.5\\*, Perception 1326.09' in block
    assert '[config](configs/toy/toy-vit_in1k.py)' in block
    assert '[Toy](configs/toy/README.md)' in block
    # the collection README was created with its own table
    coll = open(osp.join(repo, 'configs', 'toy', 'README.md')).read()
    assert coll.startswith('# Toy\n\n> [A toy paper](https://example.org/toy)')
    assert '[config](toy-vit_in1k.py)' in coll
    # idempotent, and --check is then clean
    assert gmz.main(['--model-index', index, '--check']) == 0
    # text outside the markers is kept on regeneration
    with open(readme, 'a') as f:
        f.write('\nAfter the table.\n')
    assert gmz.main(['--model-index', index]) == 0
    assert open(readme).read().endswith('After the table.\n')


def test_footnote_explains_the_star_only_when_a_number_has_one():
    verified = dict(
        Name='a',
        Results=[dict(Task='t', Metrics={
            'mIoU': 49.1,
            'box AP': None
        })])
    flagged = dict(verified, Metadata=dict(Unverified=['mIoU']))
    none_flagged = dict(verified, Metadata=dict(Unverified=['box AP']))
    assert 'unverified' not in gmz.footnote([verified, none_flagged])
    assert gmz.footnote([verified, flagged]).startswith('\\* unverified value')
    assert gmz._metrics(flagged) == 'mIoU 49.1\\*'
    assert gmz.footnote([verified]).startswith('Params and FLOPs')


def test_check_detects_drift(tmp_path, capsys):
    index = copy_fixture(tmp_path)
    repo = osp.dirname(index)
    assert gmz.main(['--model-index', index]) == 0
    meta = osp.join(repo, 'configs', 'toy', 'metafile.yml')
    text = open(meta).read().replace('Top 1 Accuracy: 84.0',
                                     'Top 1 Accuracy: 84.5')
    open(meta, 'w').write(text)
    capsys.readouterr()
    assert gmz.main(['--model-index', index, '--check']) == 1
    out = capsys.readouterr().out
    assert '+| toy-vit_in1k' in out and 'Top 1 Accuracy 84.5' in out
    # --check wrote nothing
    assert 'Top 1 Accuracy 84.0 |' in open(osp.join(repo, 'README.md')).read()


def test_missing_readme_fails_check(tmp_path):
    index = copy_fixture(tmp_path)
    assert gmz.main(['--model-index', index, '--check']) == 1


def test_parameters_and_flops_columns():
    model = dict(
        Name='m',
        Metadata=dict(Parameters=256444648, FLOPs=50766034944),
        Results=None,
        Weights='https://huggingface.co/mtgv/VisionLLaMA-Base-MAE/resolve/'
        'main/epoch_800.pth',
        Config='configs/x/m.py')
    table = gmz.model_table([model], '/r', '/r')
    row = table.splitlines()[-1]
    assert '| 256.4 | 50.8 |' in row
    assert '[mtgv/VisionLLaMA-Base-MAE/epoch_800.pth](https://' in row
    assert '| Training | - |' in row


def test_repository_readmes_are_in_step():
    assert gmz.main(['--model-index', INDEX, '--check']) == 0

"""The model index: listing, mmpretrain registration, shipped content."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import yaml
from zoo_utils import DATA, INDEX, ROOT

from visionllama_mm import zoo

FIX_INDEX = osp.join(DATA, 'model-index.yml')


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _repo_models():
    models = []
    for rel in _load(INDEX)['Import']:
        data = _load(osp.join(ROOT, rel))
        for m in data['Models']:
            models.append((rel, m))
    return models


# --------------------------------------------------------------- fixture
def test_list_models_on_fixture():
    assert zoo.list_models(
        path=FIX_INDEX) == ['toy-vit-wide_in1k', 'toy-vit_in1k']
    assert zoo.list_models('wide', path=FIX_INDEX) == ['toy-vit-wide_in1k']
    assert zoo.list_models(
        task='Visual Question Answering',
        path=FIX_INDEX) == ['toy-vit-wide_in1k']
    recs = {r['name']: r for r in zoo.model_records(FIX_INDEX)}
    rec = recs['toy-vit_in1k']
    assert rec['config'] == osp.join(DATA, 'configs', 'toy', 'toy-vit_in1k.py')
    assert rec['collection'] == 'Toy'
    assert rec['results'][0]['Metrics']['Top 1 Accuracy'] == 84.0
    assert rec['metadata']['Training Data'] == ['ImageNet-1k']
    assert rec['tasks'] == ['Image Classification']


def test_cli_lists_and_shows(capsys):
    # one real `python -m` run, the rest in-process
    cmd = [sys.executable, '-m', 'visionllama_mm.zoo']
    env = {**os.environ, 'PYTHONPATH': ROOT}
    out = subprocess.run(
        cmd + ['--model-index', FIX_INDEX, 'list'],
        capture_output=True,
        text=True,
        env=env,
        check=True).stdout
    assert 'toy-vit_in1k\n    collection: Toy' in out
    assert 'results: ImageNet-1k Top 1 Accuracy 84.0' in out
    assert out.rstrip().endswith('2 model(s)')
    assert zoo.main(['--model-index', FIX_INDEX, 'show', 'toy-vit_in1k']) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown['weights'] == 'https://example.org/toy.pth'
    assert zoo.main([
        '--model-index', FIX_INDEX, 'list', '--json', '--task',
        'Visual Question Answering'
    ]) == 0
    assert [r['name'] for r in json.loads(capsys.readouterr().out)] == \
        ['toy-vit-wide_in1k']
    assert zoo.main(['--model-index', FIX_INDEX, 'show', 'nope']) == 1


def test_register_with_mmpretrain_on_fixture():
    mmpretrain = pytest.importorskip('mmpretrain')
    names = zoo.register_mmpretrain_models(FIX_INDEX)
    assert names == ['toy-vit-wide_in1k', 'toy-vit_in1k']
    assert zoo.register_mmpretrain_models(FIX_INDEX) == []  # idempotent
    assert mmpretrain.list_models('toy-vit') == names
    assert mmpretrain.list_models(
        'toy', task='Visual Question Answering') == ['toy-vit-wide_in1k']
    model = mmpretrain.get_model('toy-vit_in1k')
    assert type(model).__name__ == 'ImageClassifier'
    assert model.head.num_classes == 10
    # mmpretrain's own models are still there
    assert 'resnet50_8xb32_in1k' in mmpretrain.list_models('resnet50')


# ------------------------------------------------------------ repository
def test_repository_index_loads_and_configs_exist():
    models = _repo_models()
    names = [m['Name'] for _, m in models]
    assert len(names) == len(set(names)), 'model names must be unique'
    for rel, m in models:
        assert osp.isfile(osp.join(ROOT, m['Config'])), (rel, m['Config'])
        assert m['In Collection']
        assert {'Parameters', 'FLOPs', 'Training Data'} <= set(m['Metadata'])
        # configs live next to their metafile
        assert osp.dirname(m['Config']) == osp.dirname(rel)
    for rel in _load(INDEX)['Import']:
        for coll in _load(osp.join(ROOT, rel))['Collections']:
            assert coll['Paper']['URL'].startswith('https://arxiv.org/abs/')
            assert osp.isfile(osp.join(ROOT, coll['README'])), coll['README']
    # modelindex (what mim uses) parses it
    assert sorted(zoo.list_models(path=INDEX)) == sorted(names)


#: The published numbers (docs/visionllama.md#published-numbers,
#: docs/llama_adapter_v2.md#evaluation-and-published-numbers): config name ->
#: {metric: value}.
HEADLINE = {
    'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k': {
        'Top 1 Accuracy': 84.0
    },
    'visionllama-base-p16_mae1600-pre_8xb128-lrd45-coslr-100e_in1k': {
        'Top 1 Accuracy': 84.3
    },
    'visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k': {
        'Top 1 Accuracy': 69.7
    },
    'visionllama-base-p16_mae1600-pre_linear-8xb2048-coslr-90e_in1k': {
        'Top 1 Accuracy': 71.7
    },
    'visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-coslr-50e_in1k': {
        'Top 1 Accuracy': 85.5
    },
    'visionllama-large-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k': {
        'Top 1 Accuracy': 77.3
    },
    'pyramid-visionllama-s_8xb128_in1k': {
        'Top 1 Accuracy': 81.6
    },
    'pyramid-visionllama-b_8xb128_in1k': {
        'Top 1 Accuracy': 83.2
    },
    'pyramid-visionllama-l_8xb128_in1k': {
        'Top 1 Accuracy': 83.6
    },
    'upernet_visionllama-base-p16-mae800_8xb2-amp-160k_ade20k-512x512': {
        'mIoU': 49.0
    },
    'upernet_visionllama-base-p16-mae1600_8xb2-amp-160k_ade20k-512x512': {
        'mIoU': 50.2
    },
    'dit-llama-b-4_8xb32-400k_in1k-256': {
        'FID-50k': 39.51
    },
    'dit-llama-l-4_8xb32-400k_in1k-256': {
        'FID-50k': 18.64
    },
    'dit-llama-xl-4_8xb32-400k_in1k-256': {
        'FID-50k': 18.69
    },
    'dit-llama-xl-2_8xb32-2400k_in1k-256': {
        'FID-50k': 2.42
    },
    'mask-rcnn_pyramid-visionllama-b_fpn_amp-ms-crop-3x_coco': {
        'box AP': 49.1,
        'mask AP': 43.8
    },
    'vitdet_mask-rcnn_visionllama-base-p16-mae800_8xb4-accum2-lsj-36e_coco': {
        'box AP': 52.2,
        'mask AP': 46.3
    },
    'llama-adapter-v2_lora-bias-7b-v21_vqa': {
        'Perception': 1326.09,
        'Cognition': 356.43
    },
}
#: Numbers checked against arXiv 2403.00522v2 (ECCV): the table each entry's
#: Note cites. None of them is flagged unverified any more.
_T2, _T3 = 'Table 2', 'Table 3'
PAPER_TABLES = {
    'pyramid-visionllama-s_8xb128_in1k': _T2,
    'pyramid-visionllama-b_8xb128_in1k': _T2,
    'pyramid-visionllama-l_8xb128_in1k': _T2,
    'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k': _T3,
    'visionllama-base-p16_mae1600-pre_8xb128-lrd45-coslr-100e_in1k': _T3,
    'visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-coslr-50e_in1k': _T3,
    'visionllama-base-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k': _T3,
    'visionllama-base-p16_mae1600-pre_linear-8xb2048-coslr-90e_in1k': _T3,
    'visionllama-large-p16_mae800-pre_linear-8xb2048-coslr-90e_in1k': _T3,
    'upernet_visionllama-base-p16-mae800_8xb2-amp-160k_ade20k-512x512':
    'Table 4b',
    'upernet_visionllama-base-p16-mae1600_8xb2-amp-160k_ade20k-512x512':
    'Table 4b',
    'mask-rcnn_pyramid-visionllama-b_fpn_amp-ms-crop-3x_coco': 'Table 5',
    'vitdet_mask-rcnn_visionllama-base-p16-mae800_8xb4-accum2-lsj-36e_coco':
    'Table 6',
    'dit-llama-b-4_8xb32-400k_in1k-256': 'Table 1',
    'dit-llama-l-4_8xb32-400k_in1k-256': 'Table 1',
    'dit-llama-xl-4_8xb32-400k_in1k-256': 'Table 1',
    'dit-llama-xl-2_8xb32-2400k_in1k-256': 'Table 1',
    'sit-llama-s-2_8xb32-400k_in1k-256': 'Table 8',
    'sit-llama-b-2_8xb32-400k_in1k-256': 'Table 8',
    'sit-llama-l-2_8xb32-400k_in1k-256': 'Table 8',
    'sit-llama-xl-2_8xb32-400k_in1k-256': 'Table 8',
    'visionllama-deit3-small-p16_8xb256-lamb-800e_in1k': _T2,
    'visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k': _T2,
    'visionllama-deit3-large-p16_deit3-128px-pre_8xb64-adamw-20e_in1k': _T2,
    'upernet_pyramid-visionllama-b_8xb2-amp-160k_ade20k-512x512': 'Table 4a',
    'upernet_pyramid-visionllama-l_8xb2-amp-160k_ade20k-512x512': 'Table 4a',
}
HEADLINE.update({
    'sit-llama-s-2_8xb32-400k_in1k-256': {
        'FID-50k': 53.90
    },
    'sit-llama-b-2_8xb32-400k_in1k-256': {
        'FID-50k': 29.53
    },
    'sit-llama-l-2_8xb32-400k_in1k-256': {
        'FID-50k': 14.32
    },
    'sit-llama-xl-2_8xb32-400k_in1k-256': {
        'FID-50k': 12.20
    },
    'visionllama-deit3-small-p16_8xb256-lamb-800e_in1k': {
        'Top 1 Accuracy': 81.6
    },
    'visionllama-deit3-base-p16_deit3-192px-pre_8xb64-adamw-20e_in1k': {
        'Top 1 Accuracy': 83.6
    },
    'visionllama-deit3-large-p16_deit3-128px-pre_8xb64-adamw-20e_in1k': {
        'Top 1 Accuracy': 84.6
    },
    'upernet_pyramid-visionllama-b_8xb2-amp-160k_ade20k-512x512': {
        'mIoU': 49.1
    },
    'upernet_pyramid-visionllama-l_8xb2-amp-160k_ade20k-512x512': {
        'mIoU': 50.0
    },
})
#: Official checkpoints (docs/generation.md#variants,
#: docs/visionllama.md#checkpoint-layouts).
WEIGHTS = {
    'mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k':
    'mtgv/VisionLLaMA-Base-MAE/resolve/main/epoch_800.pth',
    'mae_visionllama-base-p16_8xb512-amp-coslr-1600e_in1k':
    'mtgv/VisionLLaMA-Base-MAE/resolve/main/epoch_1600.pth',
    'mae_visionllama-large-p16_8xb256-amp-coslr-800e_in1k':
    'mtgv/VisionLLaMA-Large-MAE/resolve/main/epoch_800.pth',
    'pyramid-visionllama-s_8xb128_in1k':
    'mtgv/Pyramid-VisionLLaMA-S/resolve/main/best_checkpoint.pth',
    'pyramid-visionllama-b_8xb128_in1k':
    'mtgv/Pyramid-VisionLLaMA-B/resolve/main/best_checkpoint.pth',
    'pyramid-visionllama-l_8xb128_in1k':
    'mtgv/Pyramid-VisionLLaMA-L/resolve/main/best_checkpoint.pth',
    'dit-llama-b-4_8xb32-400k_in1k-256':
    'mtgv/DiTLLaMA-B-4/resolve/main/0400000.pt',
    'dit-llama-l-4_8xb32-400k_in1k-256':
    'mtgv/DiTLLaMA-L-4/resolve/main/0400000.pt',
    'dit-llama-xl-4_8xb32-400k_in1k-256':
    'mtgv/DiTLLaMA-XL-4/resolve/main/0400000.pt',
    'dit-llama-xl-2_8xb32-2400k_in1k-256':
    'mtgv/DiTLLaMA-XL-2/resolve/main/2400000.pt',
    'sit-llama-s-2_8xb32-400k_in1k-256':
    'mtgv/SiTLLaMA-S-2/resolve/main/0400000.pt',
    'sit-llama-l-2_8xb32-400k_in1k-256':
    'mtgv/SiTLLaMA-L-2/resolve/main/0400000.pt',
    'sit-llama-xl-2_8xb32-400k_in1k-256':
    'mtgv/SiTLLaMA-XL-2/resolve/main/0400000.pt',
}


def test_repository_headline_numbers():
    models = {m['Name']: m for _, m in _repo_models()}
    for name, expected in HEADLINE.items():
        assert name in models, f'{name} missing from the model index'
        metrics = {}
        for result in models[name]['Results']:
            metrics.update(result['Metrics'])
        for metric, value in expected.items():
            assert metrics.get(metric) == value, (name, metric)
    for name, m in models.items():
        assert not m['Metadata'].get('Unverified'), name
        if name in PAPER_TABLES:
            assert f'arXiv 2403.00522v2 {PAPER_TABLES[name]}' in \
                m['Metadata'].get('Note', '').replace('appendix ', ''), name
    # every published VisionLLaMA number cites its table
    for name, expected in HEADLINE.items():
        if models[name]['In Collection'] != 'LLaMA-Adapter-V2':
            assert name in PAPER_TABLES, name
    # the MME scores are the official repository's, not the paper's
    note = models['llama-adapter-v2_lora-bias-7b-v21_vqa']['Metadata']['Note']
    assert 'OpenGVLab/LLaMA-Adapter' in note and 'not from the paper' in note
    for name, path in WEIGHTS.items():
        assert models[name]['Weights'] == 'https://huggingface.co/' + path


def test_repository_tasks_fit_the_inferencers():
    allowed = set(zoo.MMPRETRAIN_TASKS) | {
        'Semantic Segmentation', 'Object Detection', 'Instance Segmentation',
        'Image Generation'
    }
    for _, m in _repo_models():
        for result in m.get('Results') or []:
            assert result['Task'] in allowed, (m['Name'], result['Task'])


def test_repository_parameter_counts_follow_the_spec():
    """Our counts against the docs' computed ones
    (docs/visionllama.md#arch-table-and-parameter-counts,
    docs/pyramid.md#variants, docs/generation.md#variants).

    Plain encoders: 255.7M (B) / 913.8M (L) without pos_embed (the FT model
    adds ln2 and the 1000-way head); pyramid classifiers 25.9 / 56.0 /
    104.7M; DiT-LLaMA: the docs' counts include the unused pos_embed
    (T x D), which our models do not create.
    """
    models = {m['Name']: m['Metadata'] for _, m in _repo_models()}

    def params(name):
        return models[name]['Parameters'] / 1e6

    b_head = (2 * 768 + 768 * 1000 + 1000) / 1e6
    l_head = (2 * 1024 + 1024 * 1000 + 1000) / 1e6
    assert params('visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-'
                  '100e_in1k') == pytest.approx(
                      255.7 + b_head, abs=0.05)
    assert params('visionllama-large-p16_mae800-pre_8xb64-accum2-lrd45-'
                  'coslr-50e_in1k') == pytest.approx(
                      913.8 + l_head, abs=0.05)
    for size, count in (('s', 25.9), ('b', 56.0), ('l', 104.7)):
        assert params(f'pyramid-visionllama-{size}_8xb128_in1k') == \
            pytest.approx(count, abs=0.05)
    for name, count, tokens, dim in (
        ('dit-llama-b-4_8xb32-400k_in1k-256', 130.4, 64, 768),
        ('dit-llama-l-4_8xb32-400k_in1k-256', 464.2, 64, 1024),
        ('dit-llama-xl-4_8xb32-400k_in1k-256', 674.9, 64, 1152),
        ('dit-llama-xl-2_8xb32-2400k_in1k-256', 675.0, 256, 1152),
    ):
        assert params(name) + tokens * dim / 1e6 == \
            pytest.approx(count, abs=0.05)


def test_repository_mmpretrain_registration():
    mmpretrain = pytest.importorskip('mmpretrain')
    zoo.register_mmpretrain_models(INDEX)
    names = set(mmpretrain.list_models('*visionllama*'))
    assert 'pyramid-visionllama-b_8xb128_in1k' in names
    assert 'visionllama-base-p16_mae800-pre_8xb128-lrd45-coslr-100e_in1k' \
        in names
    assert 'mae_visionllama-base-p16_8xb512-amp-coslr-800e_in1k' in names
    # segmentation / detection / generation models are not mmpretrain's
    assert not any(
        n.startswith(('upernet', 'mask-rcnn', 'vitdet')) for n in names)
    assert 'dit-llama-b-4_8xb32-400k_in1k-256' not in \
        mmpretrain.list_models('dit-llama')
    caption = mmpretrain.list_models('llama-adapter', task='Image Caption')
    assert 'llama-adapter-v2_bias-7b_caption' in caption


def _fake_install(tmp_path, index, monkeypatch):
    """A package folder laid out like an editable install's .mim."""
    search = pytest.importorskip('mim.commands.search')
    pkg = tmp_path / 'visionllama_mm'
    mim_dir = pkg / '.mim'
    mim_dir.mkdir(parents=True)
    (mim_dir / 'model-index.yml').symlink_to(index)
    (mim_dir / 'configs').symlink_to(osp.join(osp.dirname(index), 'configs'))
    monkeypatch.setattr(search, 'is_installed', lambda name: True)
    monkeypatch.setattr(search, 'get_installed_path', lambda name: str(pkg))
    return search


@pytest.mark.parametrize('index', [FIX_INDEX, INDEX], ids=['fixture', 'repo'])
def test_mim_search_reads_the_index(tmp_path, monkeypatch, index):
    """What `mim search visionllama_mm` does once the package is installed.

    mim finds ``<package>/.mim/model-index.yml`` (setup.py links it there
    on `mim install -e .` / `pip install -e .`) and tabulates it.
    """
    search = _fake_install(tmp_path, index, monkeypatch)
    df = search.get_model_info('visionllama_mm', local=True)
    names = set(zoo.list_models(path=index))
    assert set(df.index) == names
    if index == FIX_INDEX:
        assert df.loc['toy-vit_in1k', 'imagenet-1k/top_1_accuracy'] == 84.0
        assert df.loc['toy-vit_in1k', 'model'] == 'toy'
    else:
        row = df.loc['pyramid-visionllama-b_8xb128_in1k']
        assert row['imagenet-1k/top_1_accuracy'] == 83.2
        assert row['weight'].endswith('best_checkpoint.pth')
        filtered = search.get_model_info(
            'visionllama_mm',
            local=True,
            filter_conditions='parameters>500000000')
        assert 'pyramid-visionllama-b_8xb128_in1k' not in filtered.index
        assert 'dit-llama-xl-2_8xb32-2400k_in1k-256' in filtered.index

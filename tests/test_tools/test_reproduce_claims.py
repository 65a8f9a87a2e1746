"""Reproductions of the paper's claims: every claim end to end at a few
iterations (default suite); the full runs (>= 3 seeds) are marked slow."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from visionllama_mm.analysis.reproduce import (ABLATIONS, ALL_CLAIMS, CLAIMS,
                                               GENERATION_VARIANTS,
                                               RESOLUTION_VARIANTS,
                                               digit_features, run_claim,
                                               run_dir_name, summarise)

pytest.importorskip('mmpretrain')
pytest.importorskip('mlxtend')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'reproduce_claims.py')
QUICK = dict(epochs=1, train_images=64, test_images=50, log=lambda s: None)


def test_summarise():
    rows = [dict(v='a', x=1.), dict(v='a', x=3.), dict(v='b', x=2.)]
    out = {r['v']: r for r in summarise(rows, ('v', ), 'x')}
    assert out['a']['mean'] == 2. and out['a']['n'] == 2
    assert out['a']['std'] == pytest.approx(2**0.5)
    assert out['b']['std'] == 0.


def test_resolution_quick(tmp_path):
    text = run_claim(
        'resolution',
        str(tmp_path),
        seeds=(0, 1),
        scales=(1., 2.),
        variants=['visionllama-2d-rope', 'vit-learned-pe'],
        **QUICK)
    for name in ('resolution.md', 'resolution.json', 'resolution.png',
                 'convergence.png'):
        assert (tmp_path / name).is_file(), name
    data = json.loads((tmp_path / 'resolution.json').read_text())
    variants = {r['variant'] for r in data['summary']}
    assert variants == {
        'visionllama-2d-rope / rope', 'visionllama-2d-rope / as2drope',
        'visionllama-2d-rope / ntk', 'vit-learned-pe / learned-pe-bicubic'
    }
    assert all(r['n'] == 2 for r in data['summary'])
    assert all(0 <= r['top1'] <= 100 for r in data['rows'])
    # at the training size AS2DRoPE and NTK (alpha 1) equal plain RoPE
    at1 = {
        (r['variant'], r['seed']): r['top1']
        for r in data['rows'] if r['size'] == 28
    }
    assert len(at1) == 8
    for seed in (0, 1):
        base = at1[('visionllama-2d-rope / rope', seed)]
        assert at1[('visionllama-2d-rope / as2drope', seed)] == base
        assert at1[('visionllama-2d-rope / ntk', seed)] == base
    assert '±' in text and 'Convergence' in text
    # a second call reuses the finished runs
    done = sorted(tmp_path.glob('runs/*/result.json'))
    assert len(done) == 4
    mtimes = [p.stat().st_mtime for p in done]
    run_claim(
        'resolution',
        str(tmp_path),
        seeds=(0, ),
        scales=(1., ),
        variants=['visionllama-2d-rope'],
        **QUICK)
    assert [
        p.stat().st_mtime for p in sorted(tmp_path.glob('runs/*/result.json'))
    ] == mtimes


def test_resolution_quick_1d_and_mixed_rope(tmp_path):
    """The 1D (raster) and learnable mixed RoPE rows of the resolution
    claim, end to end at a few iterations."""
    run_claim(
        'resolution',
        str(tmp_path),
        seeds=(0, ),
        scales=(1., 1.5),
        variants=['visionllama-1d-rope', 'visionllama-mixed-rope'],
        **QUICK)
    data = json.loads((tmp_path / 'resolution.json').read_text())
    assert {r['variant']
            for r in data['summary']} == {
                'visionllama-1d-rope / rope', 'visionllama-1d-rope / as2drope',
                'visionllama-mixed-rope / rope',
                'visionllama-mixed-rope / as2drope'
            }
    assert {r['size'] for r in data['rows']} == {28, 42}
    # the two trained variants are different models (the mixed RoPE adds
    # learnable frequencies)
    params = {n: rs[0]['params'] for n, rs in data['runs'].items()}
    assert params['visionllama-mixed-rope'] > params['visionllama-1d-rope']
    at1 = {r['variant']: r['top1'] for r in data['rows'] if r['size'] == 28}
    for name in ('visionllama-1d-rope', 'visionllama-mixed-rope'):
        assert at1[f'{name} / as2drope'] == at1[f'{name} / rope']


def test_shared_baseline_runs():
    """Every ablation's official variant is the resolution claim's 2D RoPE
    model: one run folder (trained once when claims share a runs folder)."""
    names = {run_dir_name(*RESOLUTION_VARIANTS['visionllama-2d-rope'], 0, 12)}
    for variants in ABLATIONS.values():
        official = next(v for k, v in variants.items() if 'official' in k)
        names.add(run_dir_name(*official, 0, 12))
    assert len(names) == 1
    other = run_dir_name(*ABLATIONS['ablation-norm']['rmsnorm'], 0, 12)
    assert other not in names
    assert run_dir_name(*RESOLUTION_VARIANTS['visionllama-2d-rope'], 1,
                        12) not in names


@pytest.fixture(scope='module')
def shared_runs(tmp_path_factory):
    return str(tmp_path_factory.mktemp('runs'))


@pytest.mark.parametrize('claim', sorted(ABLATIONS) + ['mae'])
def test_claim_quick(tmp_path, claim, shared_runs):
    text = run_claim(
        claim, str(tmp_path), seeds=(0, ), runs_dir=shared_runs, **QUICK)
    assert (tmp_path / f'{claim}.md').read_text().strip() == text.strip()
    assert (tmp_path / f'{claim}.png').is_file()
    variants = ABLATIONS.get(claim, {'visionllama-mae': 0, 'vit-mae': 0})
    assert '±' in text
    for name in variants:
        assert f'| {name} |' in text


def test_jobs_train_in_processes_with_equal_results(tmp_path, shared_runs):
    """--jobs 2 trains the runs in two processes; every number equals the
    sequential (in-process) run of the same variant and seed."""
    claim = 'ablation-rope-heads'
    seq = tmp_path / 'seq'
    run_claim(claim, str(seq), seeds=(0, ), runs_dir=shared_runs, **QUICK)
    par = tmp_path / 'par'
    msgs = []
    text = run_claim(
        claim, str(par), seeds=(0, ), jobs=2, **dict(QUICK, log=msgs.append))
    assert '[reproduce] training 2 runs in 2 processes' in msgs
    assert len(list(par.glob('runs/*/result.json'))) == 2

    def numbers(folder):
        runs = json.loads((folder / f'{claim}.json').read_text())['runs']
        return {
            name: [(r['params'], r['val_top1'], r['losses']) for r in rs]
            for name, rs in runs.items()
        }

    assert numbers(par) == numbers(seq)
    assert (seq / f'{claim}.md').read_text().strip() == text.strip()
    with pytest.raises(ValueError, match='jobs must be a positive int'):
        run_claim(claim, str(par), jobs=0, **QUICK)


def _generator_net(name):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import visionllama_mm.generation  # noqa: F401
    from visionllama_mm.registry import MODELS
    config, overrides = GENERATION_VARIANTS[name]
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    init_default_scope('mmagic')
    return MODELS.build(cfg.model).net, cfg


@pytest.mark.parametrize('llama,base', [('dit-llama', 'dit'),
                                        ('sit-llama', 'sit')])
def test_generation_baselines_are_dit_blocks(llama, base):
    """The Table 10 baselines are DiT's network (GELU MLP, sin-cos
    positions, no RoPE) of the same width / depth as the LLaMA variant,
    trained on the classification split's training digits only."""
    from visionllama_mm.layers import Mlp, SwiGLU
    net_l, cfg_l = _generator_net(llama)
    net_b, cfg_b = _generator_net(base)
    assert net_l.use_rope and not net_b.use_rope
    assert net_l.add_pos_embed and net_b.add_pos_embed
    assert isinstance(net_l.blocks[0].mlp, SwiGLU)
    assert isinstance(net_b.blocks[0].mlp, Mlp)
    assert net_b.blocks[0].mlp.fc1.out_features == 4 * net_b.hidden_size
    assert (len(net_l.blocks), net_l.hidden_size) == (len(net_b.blocks),
                                                      net_b.hidden_size)
    n_l = sum(p.numel() for p in net_l.parameters())
    n_b = sum(p.numel() for p in net_b.parameters())
    assert abs(n_l - n_b) / n_b < 0.01  # matched size
    for cfg in (cfg_l, cfg_b):
        assert cfg.train_dataloader.dataset.split == 'train'
        assert cfg.train_cfg.max_iters == 3000


def test_digit_fid_separates_digits():
    """The FID feature space: 300 real digits are closer to the held-out
    digits than 300 of one class, 300 dimmed digits or 300 noise images."""
    import numpy as np

    from visionllama_mm.analysis.reproduce import _digits
    from visionllama_mm.generation.fid import (compute_fid, extract_features,
                                               feature_statistics)
    extractor, predict, top1 = digit_features(train_images=400)
    held, _ = _digits('test')
    ref = feature_statistics(extract_features(extractor, held[..., None]))
    train, labels = _digits('train')
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train))[:300]
    digits = train[idx]
    fid = {
        name: compute_fid(extractor, images[..., None], ref)
        for name, images in (
            ('digits', digits), ('ones', train[labels == 1][:300]),
            ('dimmed', (digits // 2)),
            ('noise', rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)))
    }
    assert fid['digits'] < min(fid['ones'], fid['dimmed'], fid['noise'])
    # a digit classifier (400 training digits: well above chance, 10 %)
    assert top1 > 50
    assert (predict(digits[..., None]) == labels[idx]).mean() > .5


def test_generation_quick(tmp_path):
    """The Table 10 claim end to end at a few iterations (the DiT pair; the
    SiT pair differs only by its config, built above)."""
    import numpy as np
    text = run_claim(
        'generation',
        str(tmp_path),
        seeds=(0, ),
        iters=2,
        num_samples=20,
        sample_steps=2,
        train_images=64,
        variants=['dit-llama', 'dit'],
        log=lambda s: None)
    for name in ('generation.md', 'generation.json', 'generation.png',
                 'generation-loss.png', 'generation-samples.png'):
        assert (tmp_path / name).is_file(), name
    data = json.loads((tmp_path / 'generation.json').read_text())
    assert {r['variant'] for r in data['rows']} == {'dit-llama', 'dit'}
    for rs in data['runs'].values():
        (r, ) = rs
        assert r['fid'] > 0 and 0 <= r['recognised'] <= 100
        assert r['iters'] == 2 and len(r['losses']) == 2
    # different blocks, matched size
    n_base = data['runs']['dit'][0]['params']
    n_llama = data['runs']['dit-llama'][0]['params']
    assert n_base != n_llama and abs(n_base - n_llama) / n_base < .01
    assert '| dit-llama |' in text and '| dit |' in text
    assert '| dit-llama vs dit |' in text and '| sit' not in text
    samples = sorted(tmp_path.glob('runs/*/samples.npz'))
    assert len(samples) == 2
    with np.load(samples[0]) as s:
        assert s['arr_0'].shape == (20, 28, 28, 3)
        assert s['labels'].tolist() == [i % 10 for i in range(20)]

    # the DiT pair as a claim of its own reuses those runs: same table rows,
    # its own file names, nothing retrained
    stamps = {p: p.stat().st_mtime_ns for p in samples}
    pair_text = run_claim(
        'generation-dit',
        str(tmp_path / 'pair'),
        seeds=(0, ),
        iters=2,
        num_samples=20,
        sample_steps=2,
        train_images=64,
        runs_dir=str(tmp_path / 'runs'),
        log=lambda s: None)
    for name in ('generation-dit.md', 'generation-dit.json',
                 'generation-dit.png', 'generation-dit-loss.png',
                 'generation-dit-samples.png'):
        assert (tmp_path / 'pair' / name).is_file(), name
    rows = [ln for ln in text.splitlines() if ln.startswith('| dit')]
    assert rows and rows == [
        ln for ln in pair_text.splitlines() if ln.startswith('| dit')
    ]
    assert {p: p.stat().st_mtime_ns for p in samples} == stamps
    assert sorted(tmp_path.glob('runs/*/samples.npz')) == samples


def test_generation_pair_claims(tmp_path):
    """Each Table 10 pair is a claim of its own; ``all`` runs
    ``generation`` (both pairs) and not the pairs again."""
    assert {'generation', 'generation-dit', 'generation-sit'} <= set(CLAIMS)
    assert 'generation' in ALL_CLAIMS
    assert not {'generation-dit', 'generation-sit'} & set(ALL_CLAIMS)
    assert set(CLAIMS) - set(ALL_CLAIMS) == {
        'generation-dit', 'generation-sit'
    }
    with pytest.raises(ValueError, match=r"generation-sit.*'sit-llama'.*'dit"):
        run_claim('generation-sit', str(tmp_path), variants=['dit'])


def test_cli_rejects_unknown_claim():
    proc = subprocess.run([sys.executable, TOOL, 'table99'],
                          capture_output=True,
                          text=True)
    assert proc.returncode != 0 and 'invalid choice' in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('claim', ALL_CLAIMS)
def test_claim_full(tmp_path, claim):
    """The full reproduction: 3 seeds, the configs' schedules, one run per
    core at a time (`generation`: 12 runs of ~10 core-minutes)."""
    text = run_claim(
        claim, str(tmp_path), seeds=(0, 1, 2), jobs=os.cpu_count() or 1)
    assert '±' in text

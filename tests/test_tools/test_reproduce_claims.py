"""Reproductions of the paper's claims: every claim end to end at a few
iterations (default suite); the full runs (>= 3 seeds) are marked slow."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from visionllama_mm.analysis.reproduce import (ABLATIONS, CLAIMS,
                                               RESOLUTION_VARIANTS, run_claim,
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
    for name in variants:
        assert f'| {name} |' in text


def test_cli_rejects_unknown_claim():
    proc = subprocess.run([sys.executable, TOOL, 'table99'],
                          capture_output=True,
                          text=True)
    assert proc.returncode != 0 and 'invalid choice' in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('claim', CLAIMS)
def test_claim_full(tmp_path, claim):
    """The full reproduction: 3 seeds, the configs' schedules."""
    text = run_claim(claim, str(tmp_path), seeds=(0, 1, 2))
    assert '±' in text

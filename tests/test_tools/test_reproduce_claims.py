"""Reproductions of the paper's claims: every claim end to end at a few
iterations (default suite); the full runs (>= 3 seeds) are marked slow."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from visionllama_mm.analysis.reproduce import (ABLATIONS, CLAIMS, run_claim,
                                               summarise)

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
    mtime = (tmp_path / 'runs' / 'visionllama-2d-rope_seed0' /
             'result.json').stat().st_mtime
    run_claim(
        'resolution',
        str(tmp_path),
        seeds=(0, ),
        scales=(1., ),
        variants=['visionllama-2d-rope'],
        **QUICK)
    assert (tmp_path / 'runs' / 'visionllama-2d-rope_seed0' /
            'result.json').stat().st_mtime == mtime


@pytest.mark.parametrize('claim', sorted(ABLATIONS) + ['mae'])
def test_claim_quick(tmp_path, claim):
    text = run_claim(claim, str(tmp_path), seeds=(0, ), **QUICK)
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

"""tools/analysis_tools/benchmark_fsdp.py: DDP vs FSDP memory per rank and
step time (CPU, gloo), and the meta-device estimate it also gives."""
import json
import os
import subprocess
import sys

import pytest
from tool_utils import ROOT, load_tool

bench = load_tool('tools/analysis_tools/benchmark_fsdp.py')


def test_7b_adapter_estimate_on_8_ranks(capsys):
    """The LLaMA-Adapter V2 7B (float32 storage) on the meta device."""
    results = bench.main([
        '--model', 'adapter-7b', '--phase', 'finetune', '--nproc', '8',
        '--estimate'
    ])
    ddp, fsdp = results['ddp'], results['fsdp']
    # every tensor once (LLaMA-7B + CLIP ViT-L/14 + bridge), 4 bytes each
    assert ddp['params'] == 4 * fsdp['total']
    assert fsdp['trainable'] == 1363968  # the released finetune group
    # 1/8 of each (padded) unit per rank
    assert fsdp['total'] * 4 / 8 <= fsdp['params'] < \
        fsdp['total'] * 4 / 8 + 4 * 64
    # FSDP keeps a gradient shard for every unit that holds a trainable
    # tensor: all decoder layers (norms, biases) but not CLIP
    assert 0.9 * fsdp['params'] < fsdp['grads'] < fsdp['params']
    assert fsdp['optimizer'] == pytest.approx(2 * 4 * 1363968 / 8, abs=64)
    out = capsys.readouterr().out
    assert '| FSDP |' in out and 'estimate (meta device)' in out
    with pytest.raises(ValueError, match='needs --estimate'):
        bench.main(['--model', 'adapter-7b', '--nproc', '2'])


@pytest.mark.slow
def test_measured_state_matches_the_estimate(tmp_path):
    """2 gloo processes: FSDP holds half of DDP's parameters, gradients and
    AdamW states, exactly what the meta-device estimate computes."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    args = ['--model', 'tiny-plain', '--nproc', '2', '--steps', '2']
    results = []
    for extra in ([], ['--estimate']):
        proc = subprocess.run(
            [sys.executable, 'tools/analysis_tools/benchmark_fsdp.py'] + args +
            extra,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:]
        (line, ) = [
            ln for ln in proc.stdout.splitlines()
            if ln.startswith(bench.RESULT_TAG)
        ]
        results.append(json.loads(line[len(bench.RESULT_TAG):]))
    measured, estimated = results
    for key in ('params', 'grads', 'optimizer'):
        assert measured['ddp'][key] == estimated['ddp'][key]
        assert measured['fsdp'][key] == pytest.approx(
            estimated['fsdp'][key], abs=4 * 2 * 8)
        assert measured['fsdp'][key] == pytest.approx(
            measured['ddp'][key] / 2, rel=0.01)
    assert measured['ddp']['step'] > 0 and measured['fsdp']['step'] > 0

"""Official DiT-LLaMA / SiT-LLaMA checkpoint converters: parity at 1e-5."""
import os
import runpy
import subprocess
import sys

import pytest
import torch
from gen_reference import official_checkpoint, reference_forward

from visionllama_mm.generation.checkpoint import (convert_official_state_dict,
                                                  load_official_checkpoint,
                                                  verify_state_dict)
from visionllama_mm.generation.models import DiTLLaMA, SiTLLaMA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TOOLS = os.path.join(ROOT, 'tools', 'model_converters')
TINY = dict(depth=2, dim=32, patch=2, grid=4, num_classes=10)


def tiny(cls):
    return cls(
        input_size=8,
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=10).eval()


def run_script(name, argv):
    old = sys.argv
    sys.argv = [name] + argv
    try:
        runpy.run_path(os.path.join(TOOLS, name), run_name='__main__')
    finally:
        sys.argv = old


@pytest.mark.parametrize('script,cls,sit', [
    ('dit_llama_to_visionllama_mm.py', DiTLLaMA, False),
    ('sit_llama_to_visionllama_mm.py', SiTLLaMA, True),
])
def test_converter_parity_on_official_shaped_weights(tmp_path, script, cls,
                                                     sit):
    ckpt = official_checkpoint('SiTLLaMA_S_2' if sit else 'DiTLLaMA_B_4',
                               **TINY)
    src, dst = tmp_path / 'official.pt', tmp_path / 'converted.pth'
    torch.save(ckpt, src)  # pickles an argparse.Namespace like upstream
    assert load_official_checkpoint(
        str(src))['args'].model == ckpt['args'].model
    run_script(script, [str(src), str(dst), '--no-verify'])

    out = torch.load(dst, weights_only=True)  # tensors + plain meta only
    assert out['meta']['model'] == ckpt['args'].model
    assert out['meta']['weights'] == 'ema'
    state = out['state_dict']
    assert all(k.startswith('net.') for k in state)
    assert 'net.pos_embed' not in state
    model = tiny(cls)
    model.load_state_dict({k[len('net.'):]: v for k, v in state.items()})
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([3., 700.]) / (1000. if sit else 1.)
    y = torch.tensor([2, 10])
    with torch.no_grad():
        ours = model(x, t, y).double()
    ref = reference_forward(ckpt['ema'], x, t, y, num_heads=2, sit=sit)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # the ema weights, not the raw ones, were converted
    other = reference_forward(ckpt['model'], x, t, y, num_heads=2, sit=sit)
    assert not torch.allclose(ours, other, atol=1e-3)


def test_bare_prefix_model_weights_and_ddp_keys():
    ckpt = official_checkpoint(**TINY)
    ckpt['model'] = {'module.' + k: v for k, v in ckpt['model'].items()}
    state = convert_official_state_dict(ckpt, weights='model', prefix='')
    assert 'x_embedder.proj.weight' in state and 'pos_embed' not in state
    torch.testing.assert_close(state['x_embedder.proj.weight'],
                               ckpt['model']['module.x_embedder.proj.weight'])
    bare = convert_official_state_dict(ckpt['ema'])  # a plain state dict
    assert set(bare) == set(ckpt['ema']) - {'pos_embed'}
    with pytest.raises(ValueError, match='weights must be one of'):
        convert_official_state_dict(ckpt, weights='opt')


def test_verify_state_dict():
    ckpt = official_checkpoint(**TINY)
    state = convert_official_state_dict(ckpt)
    verify_state_dict(state, tiny(DiTLLaMA))
    bad = dict(state)
    bad['final_layer.linear.bias'] = torch.zeros(3)
    bad.pop('blocks.1.mlp.c_fc1.weight')
    with pytest.raises(ValueError, match='missing.*c_fc1.*shape mismatches'):
        verify_state_dict(bad, tiny(DiTLLaMA))


def test_script_verifies_against_named_model(tmp_path):
    """Default run checks the file against args.model built on meta."""
    ckpt = official_checkpoint('DiTLLaMA_XL_2', **TINY)  # tiny != XL/2
    src = tmp_path / 'official.pt'
    torch.save(ckpt, src)
    proc = subprocess.run([
        sys.executable,
        os.path.join(TOOLS, 'dit_llama_to_visionllama_mm.py'),
        str(src),
        str(tmp_path / 'out.pth')
    ],
                          capture_output=True,
                          text=True,
                          env=dict(
                              os.environ,
                              PYTHONPATH=ROOT + os.pathsep +
                              os.environ.get('PYTHONPATH', '')))
    assert proc.returncode != 0
    assert 'does not fit the model' in proc.stderr
    with pytest.raises(ValueError, match='not a SiTLLaMA model'):
        run_script('sit_llama_to_visionllama_mm.py',
                   [str(src), str(tmp_path / 'out2.pth')])

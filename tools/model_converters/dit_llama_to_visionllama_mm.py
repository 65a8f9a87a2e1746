"""Convert an official DiT-LLaMA checkpoint to a tensors-only file.

Usage::

    python tools/model_converters/dit_llama_to_visionllama_mm.py \
        0400000.pt dit_llama_b4_ema.pth

The official snapshot ``{'model', 'ema', 'opt', 'args'}`` is loaded without
unpickling arbitrary objects; the ``ema`` weights are kept, the unused
``pos_embed`` is dropped, keys get the ``net.`` prefix of the registered
model (``--prefix ''`` for the bare network) and are checked against the
network named by ``args.model``.
"""
from visionllama_mm.generation.checkpoint import convert_main

if __name__ == '__main__':
    convert_main(family='DiTLLaMA')

"""Convert an official SiT-LLaMA checkpoint to a tensors-only file.

Usage::

    python tools/model_converters/sit_llama_to_visionllama_mm.py \
        0400000.pt sit_llama_xl2_ema.pth

The official snapshot ``{'model', 'ema', 'opt', 'args'}`` is loaded without
unpickling arbitrary objects; the ``ema`` weights are kept, the unused
``pos_embed`` is dropped, keys get the ``net.`` prefix of the registered
model (``--prefix ''`` for the bare network) and are checked against the
network named by ``args.model``.
"""
from visionllama_mm.generation.checkpoint import convert_main

if __name__ == '__main__':
    convert_main(family='SiTLLaMA')

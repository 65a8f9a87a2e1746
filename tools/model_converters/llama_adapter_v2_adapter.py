"""Convert a released LLaMA-Adapter V2 adapter file for visionllama_mm.

The released files (``BIAS-7B``, ``LORA-BIAS-7B``, ``CAPTION-7B``,
``LORA-BIAS-7B-v21``; ``{'model': {...}, 'config': {...}}``) are read with
``weights_only=True``, every key and shape is checked against the expected
layout (LLaMA-7B with CLIP ViT-L/14 by default), and a tensors-only
``{'state_dict', 'meta'}`` file is written. Keys keep the official names,
which is what ``LLaMAAdapterV2.state_dict()`` uses, so the result loads with
``load_from``, ``tools/test.py CONFIG CHECKPOINT`` or the mmpretrain
inferencers' ``pretrained=``.

Example::

    python tools/model_converters/llama_adapter_v2_adapter.py \\
        1bcbffc43484332672092e0024a8699a6eb5f558161aebf98a7c6b1db67224d1_LORA-BIAS-7B.pth \\
        checkpoints/llama-adapter-v2_lora-bias-7b.pth
"""  # noqa: E501
import argparse
import os.path as osp

from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import (
    check_adapter_state, expected_adapter_shapes, ffn_hidden_dim,
    load_adapter_file, save_adapter_file)


def convert(src: str,
            dst: str,
            dim: int = 4096,
            n_layers: int = 32,
            n_heads: int = 32,
            multiple_of: int = 256,
            clip_dim: int = 768,
            v_embed_dim: int = 768,
            v_depth: int = 8,
            query_len: int = 10,
            query_layer: int = 31) -> dict:
    """Check and convert one adapter file; returns its config."""
    state, config = load_adapter_file(src)
    w_lora = bool(config.get('w_lora', any('lora' in k for k in state)))
    w_bias = bool(
        config.get('w_bias',
                   any(k.endswith('.bias') for k in state if 'llama.' in k)))
    rank = int(config.get('lora_rank', 16))
    expected = expected_adapter_shapes(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        ffn_hidden=ffn_hidden_dim(dim, multiple_of),
        clip_dim=clip_dim,
        v_embed_dim=v_embed_dim,
        v_depth=v_depth,
        query_len=query_len,
        query_layer=query_layer,
        w_bias=w_bias,
        w_lora=w_lora,
        lora_rank=rank)
    check_adapter_state(state, expected, source=src)
    config = dict(w_bias=w_bias, w_lora=w_lora, lora_rank=rank)
    save_adapter_file(
        state, dst, config=config, meta=dict(source=osp.basename(src)))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Convert a released LLaMA-Adapter V2 adapter file')
    parser.add_argument('src', help='released .pth ({model, config})')
    parser.add_argument('dst', help='output .pth ({state_dict, meta})')
    parser.add_argument('--dim', type=int, default=4096)
    parser.add_argument('--n-layers', type=int, default=32)
    parser.add_argument('--n-heads', type=int, default=32)
    parser.add_argument('--multiple-of', type=int, default=256)
    parser.add_argument('--clip-dim', type=int, default=768)
    parser.add_argument('--v-embed-dim', type=int, default=768)
    parser.add_argument('--v-depth', type=int, default=8)
    parser.add_argument('--query-len', type=int, default=10)
    parser.add_argument('--query-layer', type=int, default=31)
    args = parser.parse_args()
    config = convert(args.src, args.dst, args.dim, args.n_layers, args.n_heads,
                     args.multiple_of, args.clip_dim, args.v_embed_dim,
                     args.v_depth, args.query_len, args.query_layer)
    print(f'{args.dst}: {config}')


if __name__ == '__main__':
    main()

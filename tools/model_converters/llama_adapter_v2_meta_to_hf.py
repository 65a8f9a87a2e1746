"""Convert Meta's LLaMA (``params.json`` + ``consolidated.00.pth`` +
``tokenizer.model``) into a transformers directory.

LLaMAAdapterV2 reads the Meta layout directly (``llm=dict(meta_dir=...)``);
a transformers directory (``llm=dict(name_or_path=...)``) loads faster and
can be memory-mapped. The q/k rows are permuted for transformers'
rotate-half RoPE (docs/llama_adapter_v2.md#mapping-to-transformers-llama).

Example::

    python tools/model_converters/llama_adapter_v2_meta_to_hf.py \\
        data/llama/7B data/llama/tokenizer.model data/llama-7b-hf
"""
import argparse


def convert(meta_dir: str,
            tokenizer: str,
            out_dir: str,
            dtype: str = 'float16') -> None:
    """Write ``out_dir`` with the model and the tokenizer."""
    from visionllama_mm.multimodal.llama_adapter_v2 import llm
    tok = llm.build_tokenizer(
        dict(type='LlamaTokenizer', name_or_path=tokenizer))
    model = llm.build_llama(dict(meta_dir=meta_dir, dtype=dtype), tok.n_words)
    model.save_pretrained(out_dir)
    tok.tokenizer.save_pretrained(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Convert Meta LLaMA weights to a transformers directory')
    parser.add_argument(
        'meta_dir', help='dir with params.json and '
        'consolidated.00.pth')
    parser.add_argument('tokenizer', help='tokenizer.model')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument(
        '--dtype',
        default='float16',
        choices=['float16', 'bfloat16', 'float32'])
    args = parser.parse_args()
    convert(args.meta_dir, args.tokenizer, args.out_dir, args.dtype)
    print(f'wrote {args.out_dir}')


if __name__ == '__main__':
    main()

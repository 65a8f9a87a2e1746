"""A tiny real image-text set for LLaMA-Adapter V2: scikit-image's bundled
sample photos with one-line captions and a few instructions written for
them, plus a SentencePiece tokenizer trained on that text.

``python -m visionllama_mm.datasets.llama_adapter_skimage OUT_DIR`` writes::

    OUT_DIR/images/<name>.png                 ('_' in names becomes '-')
    OUT_DIR/annotations/captions_train.json   COCO-caption (LAVIS) format
    OUT_DIR/annotations/captions_val.json     one entry per image
    OUT_DIR/annotations/captions.tsv          released pretraining format
    OUT_DIR/annotations/instructions.json     LLaVA + Alpaca records
    OUT_DIR/corpus.txt                        tokenizer training text
    OUT_DIR/tokenizer.model                   SentencePiece (unk 0, BOS 1,
                                              EOS 2), unless --no-tokenizer
    OUT_DIR/llama_tiny/{params.json, consolidated.00.pth}
    OUT_DIR/clip_tiny/                        with --tiny-models: a random
                                              tiny LLaMA in Meta's layout and
                                              a random tiny transformers CLIP

Nothing is downloaded: only images that ship inside scikit-image are used.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List

import numpy as np

__all__ = [
    'SKIMAGE_CAPTIONS', 'prepare_skimage_caption_data', 'train_sentencepiece',
    'write_tiny_models', 'TINY_LLAMA_PARAMS', 'TINY_CLIP_CONFIG'
]

#: A tiny LLaMA (Meta ``params.json`` keys) for the quick start and tests.
TINY_LLAMA_PARAMS = dict(
    dim=64, n_layers=4, n_heads=4, multiple_of=32, norm_eps=1e-6)
#: A tiny CLIP vision tower (transformers ``CLIPVisionConfig``).
TINY_CLIP_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=224,
    patch_size=32,
    projection_dim=48,
    hidden_act='quick_gelu')

#: scikit-image sample name -> one-line description.
SKIMAGE_CAPTIONS: Dict[str, str] = {
    'astronaut': 'a smiling astronaut in an orange suit in front of a flag',
    'camera': 'a black and white photo of a man behind a camera on a tripod',
    'chelsea': 'a brown tabby cat with green eyes',
    'coffee': 'a cup of coffee on a red saucer with a spoon',
    'rocket': 'a rocket between launch towers at dusk',
    'horse': 'a black silhouette of a horse on a white background',
    'hubble_deep_field': 'a dark sky full of small colorful galaxies',
    'immunohistochemistry':
    'a microscope image of tissue with brown and blue stained cells',
    'moon': 'a grey close view of the cratered surface of the moon',
    'page': 'a scanned page of printed text with uneven light',
    'text': 'handwritten math formulas on grey paper',
    'coins': 'rows of old coins on a dark background',
    'clock': 'a blurry grey photo of a small round clock',
    'brick': 'a grey wall made of bricks',
    'grass': 'a grey texture of grass blades',
    'gravel': 'a grey texture of small stones',
    'checkerboard': 'a black and white checkerboard pattern',
    'logo': 'a green and orange logo with a snake',
    'colorwheel': 'a color wheel with all the colors of the rainbow',
    'cell': 'a grey microscope image of a single bright cell',
}

# (image or None, question, answer): LLaVA records with an image, Alpaca
# records without.
_INSTRUCTIONS = [
    ('astronaut', 'What is the person wearing?', 'An orange space suit.'),
    ('chelsea', 'What animal is in the picture?', 'A cat.'),
    ('coffee', 'What is in the cup?', 'Coffee.'),
    ('rocket', 'What stands between the towers?', 'A rocket.'),
    ('moon', 'What does the image show?', 'The surface of the moon.'),
    ('coins', 'What lies on the dark background?', 'Old coins.'),
    ('horse', 'Which animal is shown?', 'A horse.'),
    ('camera', 'What is the man using?', 'A camera on a tripod.'),
    (None, 'Name a color of the rainbow.', 'Red.'),
    (None, 'What do astronauts wear in space?', 'A space suit.'),
    (None, 'Write one word for a young cat.', 'Kitten.'),
]


def _load_sample(name: str) -> np.ndarray:
    from skimage import data
    img = getattr(data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) /
               max(float(img.max() - img.min()), 1e-12)).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def train_sentencepiece(corpus: str,
                        model_prefix: str,
                        vocab_size: int = 512) -> str:
    """Train a LLaMA-style SentencePiece model (unk 0, BOS 1, EOS 2, no
    pad), returning the ``.model`` path."""
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type='bpe',
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2)
    return model_prefix + '.model'


def prepare_skimage_caption_data(out_dir: str,
                                 tokenizer: bool = True,
                                 vocab_size: int = 512) -> Dict[str, str]:
    """Write the images, annotations, corpus and tokenizer (see module
    docstring) and return their paths."""
    from PIL import Image

    from visionllama_mm.multimodal.llama_adapter_v2.prompts import (
        CAPTION_INSTRUCTION, format_prompt)
    os.makedirs(osp.join(out_dir, 'images'), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    captions: List[dict] = []
    for name, caption in SKIMAGE_CAPTIONS.items():
        try:
            img = _load_sample(name)
        except Exception:  # not bundled with this scikit-image version
            continue
        # no '_' in file names: COCOCaption takes the image id after the
        # last '_'
        rel = f"images/{name.replace('_', '-')}.png"
        Image.fromarray(img).save(osp.join(out_dir, rel))
        captions.append(dict(image=rel, caption=caption))
    if len(captions) < 8:
        raise RuntimeError('scikit-image provides too few bundled sample '
                           f'images ({len(captions)})')
    have = {
        osp.splitext(osp.basename(c['image']))[0].replace('-', '_')
        for c in captions
    }
    instructions = []
    for i, (name, q, a) in enumerate(_INSTRUCTIONS):
        if name is None:
            instructions.append(dict(instruction=q, input='', output=a))
        elif name in have:
            instructions.append(
                dict(
                    id=f'{name}_{i}',
                    image=f"images/{name.replace('_', '-')}.png",
                    conversations=[dict(value=f'<image>\n{q}'),
                                   dict(value=a)]))
    paths = dict(
        root=out_dir,
        captions_train=osp.join(out_dir, 'annotations', 'captions_train.json'),
        captions_val=osp.join(out_dir, 'annotations', 'captions_val.json'),
        captions_tsv=osp.join(out_dir, 'annotations', 'captions.tsv'),
        instructions=osp.join(out_dir, 'annotations', 'instructions.json'),
        corpus=osp.join(out_dir, 'corpus.txt'))
    for key in ('captions_train', 'captions_val'):
        with open(paths[key], 'w') as f:
            json.dump(captions, f, indent=1)
    with open(paths['captions_tsv'], 'w') as f:
        f.write('url\tcaption\n')
        for c in captions:
            f.write(f"{c['image']}\t{c['caption']}\n")
    with open(paths['instructions'], 'w') as f:
        json.dump(instructions, f, indent=1)
    lines = [format_prompt(CAPTION_INSTRUCTION)]
    lines += [c['caption'] for c in captions]
    for _, q, a in _INSTRUCTIONS:
        lines += [format_prompt(q), format_prompt(q, 'some context'), a]
    with open(paths['corpus'], 'w') as f:
        # repeated so that SentencePiece sees enough sentences
        for _ in range(4):
            f.write('\n'.join(line.replace('\n', ' ')
                              for line in lines) + '\n')
    if tokenizer:
        paths['tokenizer'] = train_sentencepiece(
            paths['corpus'], osp.join(out_dir, 'tokenizer'), vocab_size)
    return paths


def write_tiny_models(out_dir: str,
                      vocab_size: int,
                      seed: int = 0) -> Dict[str, str]:
    """Write a random tiny LLaMA in Meta's layout (``params.json`` +
    ``consolidated.00.pth``) and a random tiny transformers CLIP directory,
    the same file layouts as the real 7B model and CLIP ViT-L/14."""
    import torch
    from transformers import (CLIPVisionConfig, CLIPVisionModelWithProjection,
                              LlamaForCausalLM)

    from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import (
        hf_to_meta_rows, hf_to_official_key, meta_params_to_hf_config,
        needs_row_permutation)
    torch.manual_seed(seed)
    params = dict(TINY_LLAMA_PARAMS, vocab_size=vocab_size)
    # a wider init than transformers' 0.02 so that the frozen random model
    # is not flat and the adapter visibly learns in a few steps
    config = meta_params_to_hf_config(
        params, vocab_size, initializer_range=0.1)
    llama = LlamaForCausalLM(config)
    state = {}
    for key, value in llama.state_dict().items():
        meta = hf_to_official_key(key)
        if meta is None:
            continue
        kind = needs_row_permutation(meta)
        if kind is not None:
            value = hf_to_meta_rows(
                value, config.num_attention_heads
                if kind == 'q' else config.num_key_value_heads)
        state[meta] = value.clone()
    llama_dir = osp.join(out_dir, 'llama_tiny')
    os.makedirs(llama_dir, exist_ok=True)
    with open(osp.join(llama_dir, 'params.json'), 'w') as f:
        json.dump(dict(TINY_LLAMA_PARAMS, vocab_size=-1), f)
    torch.save(state, osp.join(llama_dir, 'consolidated.00.pth'))
    clip_dir = osp.join(out_dir, 'clip_tiny')
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        **TINY_CLIP_CONFIG)).save_pretrained(clip_dir)
    return dict(llama_dir=llama_dir, clip_dir=clip_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--vocab-size', type=int, default=512)
    parser.add_argument('--no-tokenizer', action='store_true')
    parser.add_argument(
        '--tiny-models',
        action='store_true',
        help='also write a random tiny LLaMA (Meta layout) and CLIP')
    args = parser.parse_args()
    paths = prepare_skimage_caption_data(
        args.out_dir,
        tokenizer=not args.no_tokenizer,
        vocab_size=args.vocab_size)
    if args.tiny_models:
        if 'tokenizer' not in paths:
            parser.error('--tiny-models needs the tokenizer')
        import sentencepiece as spm
        vocab = spm.SentencePieceProcessor(
            model_file=paths['tokenizer']).get_piece_size()
        paths.update(write_tiny_models(args.out_dir, vocab))
    for key, value in paths.items():
        print(f'{key}: {value}')


if __name__ == '__main__':
    main()

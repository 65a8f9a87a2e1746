"""Fixtures of the multimodal tests."""
import json
import os.path as osp

import pytest


@pytest.fixture(scope='session')
def skimage_data(tmp_path_factory):
    """The embedded scikit-image caption data, tokenizer and tiny models."""
    pytest.importorskip('skimage')
    pytest.importorskip('sentencepiece')
    from visionllama_mm.datasets.llama_adapter_skimage import (
        prepare_skimage_caption_data, write_tiny_models)
    out = str(tmp_path_factory.mktemp('llama_adapter_skimage'))
    paths = prepare_skimage_caption_data(out, tokenizer=True, vocab_size=512)
    import sentencepiece as spm
    vocab = spm.SentencePieceProcessor(
        model_file=paths['tokenizer']).get_piece_size()
    paths.update(write_tiny_models(out, vocab))
    paths['vocab'] = vocab
    with open(osp.join(out, 'paths.json'), 'w') as f:
        json.dump(paths, f)
    return paths

"""LLaMA and its tokenizer through transformers
(docs/llama_adapter_v2.md#tokenizer, docs/llama_adapter_v2.md#external-weights,
docs/llama_adapter_v2.md#mapping-to-transformers-llama).

Sources of the language model (``llm`` config):

* ``dict(name_or_path=DIR)``: a local transformers LLaMA directory;
* ``dict(meta_dir=DIR)``: Meta's ``params.json`` + ``consolidated.NN.pth``
  (mapped to transformers' names and q/k layout,
  docs/llama_adapter_v2.md#mapping-to-transformers-llama; the model-parallel
  shards of 13B and larger are merged, see
  :func:`.checkpoint.merge_meta_shards`);
* ``dict(params=dict(dim=..., n_layers=..., ...))``: random initialisation
  from Meta-style hyper-parameters (tests, the quick start).

``load_pretrained=False`` builds the first two from their config only (the
weights then come from a full checkpoint).
"""
import glob
import json
import os.path as osp
from typing import List, Optional

import torch
from torch import nn

from .checkpoint import load_meta_llama_state_dict, meta_params_to_hf_config
from .visual import _dtype

__all__ = [
    'LLaMATokenizer', 'build_tokenizer', 'build_llama', 'LLAMA_7B_PARAMS'
]

#: LLaMA-7B ``params.json`` (docs/llama_adapter_v2.md#hyper-parameters).
LLAMA_7B_PARAMS = dict(
    dim=4096,
    n_layers=32,
    n_heads=32,
    multiple_of=256,
    norm_eps=1e-6,
    vocab_size=-1)


class LLaMATokenizer:
    """SentencePiece ids with explicit BOS/EOS, as LLaMA-Adapter uses them.

    Wraps a transformers tokenizer. With a slow (SentencePiece) legacy
    ``LlamaTokenizer`` the ids are exactly ``sp.encode``
    (docs/llama_adapter_v2.md#tokenizer); otherwise the tokenizer's own
    ``encode`` without special tokens is used.

    Args:
        tokenizer: A transformers tokenizer.
        source (str): Where it came from (for error messages).
    """

    def __init__(self, tokenizer, source: str = '') -> None:
        self.tokenizer = tokenizer
        self.source = source
        sp = getattr(tokenizer, 'sp_model', None)
        legacy = getattr(tokenizer, 'legacy', True)
        self.sp = sp if (sp is not None and legacy) else None
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        if self.bos_id is None or self.eos_id is None:
            raise ValueError(f'tokenizer {source!r} has no BOS/EOS token')
        self.n_words = len(tokenizer)

    def encode(self,
               text: str,
               bos: bool = True,
               eos: bool = False) -> List[int]:
        """Token ids of ``text`` with optional BOS / EOS."""
        if self.sp is not None:
            ids = list(self.sp.encode(text))
        else:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: List[int]) -> str:
        """Text of token ids (special tokens dropped)."""
        ids = [int(i) for i in ids]
        if self.sp is not None:
            return self.sp.decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def build_tokenizer(cfg: Optional[dict]) -> Optional[LLaMATokenizer]:
    """Build the tokenizer.

    Args:
        cfg (dict, optional): ``dict(type='LlamaTokenizer',
            name_or_path=PATH)`` where PATH is LLaMA's ``tokenizer.model``
            file or a transformers tokenizer directory. ``type`` names a
            transformers tokenizer class (``'LlamaTokenizer'``,
            ``'AutoTokenizer'``). None builds none (structure-only models).

    Returns:
        LLaMATokenizer | None
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    kind = cfg.pop('type', 'LlamaTokenizer')
    path = cfg.pop('name_or_path', None)
    if path is None:
        raise ValueError('tokenizer needs `name_or_path` (tokenizer.model or '
                         'a transformers tokenizer directory)')
    import transformers
    if osp.isfile(path):
        # A bare SentencePiece model: Meta's tokenizer.model.
        cfg.setdefault('legacy', True)
        tok = transformers.LlamaTokenizer(
            vocab_file=path, add_bos_token=True, add_eos_token=False, **cfg)
    elif osp.isdir(path):
        cls = getattr(transformers, kind, None)
        if cls is None:
            raise ValueError(f'unknown tokenizer type {kind!r}')
        try:
            tok = cls.from_pretrained(path, local_files_only=True, **cfg)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f'no tokenizer in {path!r} ({e}); pass the LLaMA '
                'tokenizer.model file or a tokenizer directory') from e
    else:
        raise FileNotFoundError(
            f'tokenizer {path!r} does not exist; pass the LLaMA '
            'tokenizer.model file or a transformers tokenizer directory')
    return LLaMATokenizer(tok, source=path)


def _find_meta_files(meta_dir: str):
    params = osp.join(meta_dir, 'params.json')
    if not osp.isfile(params):
        raise FileNotFoundError(
            f'{params} does not exist: `meta_dir` must hold Meta\'s '
            'params.json and consolidated.00.pth (e.g. llama/7B)')
    shards = sorted(glob.glob(osp.join(meta_dir, 'consolidated.*.pth')))
    if not shards:
        raise FileNotFoundError(f'no consolidated.*.pth in {meta_dir}')
    expected = [
        osp.join(meta_dir, f'consolidated.{i:02d}.pth')
        for i in range(len(shards))
    ]
    if shards != expected:
        raise ValueError(
            f'{meta_dir}: model-parallel shards must be numbered '
            f'consolidated.00.pth .. consolidated.{len(shards) - 1:02d}.pth, '
            f'got {[osp.basename(s) for s in shards]}')
    with open(params) as f:
        return json.load(f), shards, params


def build_llama(cfg: dict, vocab_size: Optional[int] = None) -> nn.Module:
    """Build transformers' ``LlamaForCausalLM``.

    Args:
        cfg (dict): See the module docstring. Extra keys: ``load_pretrained``
            (bool, default True), ``dtype`` (default ``'float32'``).
        vocab_size (int, optional): The tokenizer's size, checked against
            the model and used when the params say ``vocab_size=-1``.

    Returns:
        nn.Module: The model, frozen (``requires_grad=False``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = dict(cfg)
    dtype = _dtype(cfg.pop('dtype', 'float32'))
    load = cfg.pop('load_pretrained', True)
    sources = [k for k in ('name_or_path', 'meta_dir', 'params') if k in cfg]
    if len(sources) != 1:
        raise ValueError('llm needs exactly one of `name_or_path` '
                         '(transformers dir), `meta_dir` (Meta params.json + '
                         f'consolidated.00.pth) or `params`; got {sources}')
    if 'name_or_path' in cfg:
        path = cfg.pop('name_or_path')
        if not osp.isfile(osp.join(path, 'config.json')):
            raise FileNotFoundError(
                f'{path}/config.json does not exist: `name_or_path` must be '
                'a local transformers LLaMA directory')
        config = LlamaConfig.from_pretrained(path)
        _check_vocab(config.vocab_size, vocab_size,
                     osp.join(path, 'config.json'))
        if load:
            model = LlamaForCausalLM.from_pretrained(
                path, torch_dtype=dtype, local_files_only=True)
        else:
            model = LlamaForCausalLM(config).to(dtype)
    elif 'meta_dir' in cfg:
        params, ckpt, params_file = _find_meta_files(cfg.pop('meta_dir'))
        if vocab_size is None and params.get('vocab_size', -1) < 0:
            raise ValueError(f'{params_file} has vocab_size=-1; a tokenizer '
                             'is needed to size the model')
        config = meta_params_to_hf_config(params, vocab_size)
        _check_vocab(config.vocab_size, vocab_size, params_file)
        if load:
            with torch.device('meta'):
                model = LlamaForCausalLM(config)
            state = load_meta_llama_state_dict(ckpt, config)
            try:
                model.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as e:
                raise ValueError(f'{ckpt[0]} does not match {params_file}: '
                                 f'{e}') from e
            # non-persistent rotary tables were built on the meta device
            from transformers.models.llama.modeling_llama import \
                LlamaRotaryEmbedding
            model.model.rotary_emb = LlamaRotaryEmbedding(config=config)
            model = model.to(dtype)
        else:
            model = LlamaForCausalLM(config).to(dtype)
    else:
        params = dict(cfg.pop('params'))
        if vocab_size is None and params.get('vocab_size', -1) < 0:
            raise ValueError('llm.params has no vocab_size and no tokenizer '
                             'was given')
        config = meta_params_to_hf_config(params, vocab_size)
        _check_vocab(config.vocab_size, vocab_size, 'llm.params')
        model = LlamaForCausalLM(config).to(dtype)
    if cfg:
        raise ValueError(f'unknown llm keys: {sorted(cfg)}')
    model.requires_grad_(False)
    return model


def _check_vocab(model_vocab: int, tok_vocab: Optional[int],
                 source: str) -> None:
    if tok_vocab is not None and model_vocab != tok_vocab:
        raise ValueError(
            f'{source} gives vocab_size={model_vocab} but the tokenizer has '
            f'{tok_vocab} tokens; LLaMA and tokenizer do not match')

"""LLaMA-Adapter V2 (multimodal) as an mmpretrain-style multimodal model.

Paper: "LLaMA-Adapter V2: Parameter-Efficient Visual Instruction Model",
arXiv 2304.15010. The default configuration is the released multimodal 7B
code (``llama_adapter_v2_multimodal7b``), which produced the released
weights; the paper's variants are options
(docs/llama_adapter_v2.md#paper-and-released-code):

* ``fusion='late'`` (released): the 10-token visual query is added to the
  adaptation prompts of the last ``query_layer`` layers; ``'early'``
  (paper): visual tokens enter the first layer only, the last layers get the
  static prompts.
* ``bias_mode`` selects the bias/scale tuning (``'mm7b'``, ``'c65b'``,
  ``'paper'``, ``'none'``).
* ``phase``: ``'pretrain'`` / ``'finetune'`` train the released groups,
  ``'joint'`` is the paper's joint training with disjoint groups, where
  image-text samples update the visual side and instruction samples the
  language side, ``'frozen'`` trains nothing.

The language model is transformers' Llama with adapter attention
(:mod:`.adapter_layers`); CLIP comes from transformers or mmpretrain
(:mod:`.visual`). Saved state dicts hold only the adapter-side tensors, under
the official names, so released adapter files load directly.
"""
import re
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import nn

from visionllama_mm.engine.fsdp import unwrapped_name
from visionllama_mm.registry import HOOKS, MODELS
from visionllama_mm.utils import check_choice
from .adapter_layers import (BIAS_MODES, adapter_llama_forward,
                             inject_adapters, layer_prompts)
from .checkpoint import (hf_to_meta_rows, hf_to_official_key, meta_to_hf_rows,
                         needs_row_permutation, official_to_hf_key)
from .generation import GENERATION_DEFAULTS, sample_next_token
from .llm import build_llama, build_tokenizer
from .prompts import (CAPTION_INSTRUCTION, PROMPT_NO_INPUT, PROMPT_WITH_INPUT,
                      format_prompt)
from .visual import VisualBlock, build_clip_encoder

__all__ = [
    'LLaMAAdapterV2', 'LLaMAAdapterV2CheckpointHook', 'CLIP_MEAN', 'CLIP_STD'
]

#: CLIP normalisation in 0-255 units
#: (docs/llama_adapter_v2.md#image-preprocessing).
CLIP_MEAN = [122.770938, 116.7460125, 104.09373615]
CLIP_STD = [68.5005327, 66.6321579, 70.32316305]

PHASES = ('pretrain', 'finetune', 'joint', 'frozen')
FUSIONS = ('late', 'early')
TASKS = ('caption', 'vqa', 'chat')

# Substrings of the official names unfrozen by the released
# ``get_trainable_params('pretrain')``
# (docs/llama_adapter_v2.md#phases-and-trainable-groups).
_PRETRAIN_KEYS = ('gate', 'clip_proj', 'clip_proj_norm', 'visual_query',
                  'visual_blocks', 'visual_proj', 'visual_proj_norm',
                  'adapter_query')
_BRIDGE_KEYS = ('clip_proj', 'clip_proj_norm', 'visual_query', 'visual_blocks',
                'visual_proj', 'visual_proj_norm')
_FROZEN_BASE = re.compile(r'^(tok_embeddings\.weight|output\.weight|'
                          r'layers\.\d+\.(attention\.w[qkvo]|'
                          r'feed_forward\.w[123])\.weight)$')
_OFFICIAL_LAYER = re.compile(r'^llama\.layers\.(\d+)\.')


@MODELS.register_module()
class LLaMAAdapterV2(BaseModel):
    """LLaMA-Adapter V2 multimodal model.

    Args:
        llm (dict): The LLaMA, see :func:`.llm.build_llama`, e.g.
            ``dict(meta_dir='llama/7B', dtype='float16')``.
        tokenizer (dict, optional): ``dict(type='LlamaTokenizer',
            name_or_path=PATH)`` (``tokenizer.model`` or a directory). None
            builds a structure-only model that cannot tokenise. Defaults to
            None.
        vision_encoder (dict): The frozen CLIP, see
            :func:`.visual.build_clip_encoder`. It must output
            ``clip_dim``-wide features of all tokens.
        phase (str): Trainable group
            (docs/llama_adapter_v2.md#phases-and-trainable-groups):

            - ``'pretrain'``: gates, ``adapter_query`` and the visual bridge
              (the released pretrain group).
            - ``'finetune'``: LLaMA norms, biases (and scales, LoRA).
            - ``'joint'``: both groups; image-text samples update the visual
              side, instruction samples the language side (the paper).
            - ``'frozen'``: nothing.

            Defaults to 'finetune'.
        task (str): ``'caption'`` (writes ``pred_caption``), ``'vqa'`` or
            ``'chat'`` (write ``pred_answer``). Defaults to 'caption'.
        fusion (str): ``'late'`` (released) or ``'early'`` (paper). Defaults
            to 'late'.
        bias_mode (str): ``'mm7b'`` (released), ``'c65b'``, ``'paper'`` or
            ``'none'``, see :func:`.adapter_layers.linear_tuning`. Defaults
            to 'mm7b'.
        w_lora (bool): LoRA on all seven linear layers, with ``new_gate``.
            Defaults to False.
        lora_rank (int): LoRA rank. Defaults to 16.
        query_len (int): Tokens per prompt. Defaults to 10.
        query_layer (int): Number of adapted (last) layers. Defaults to 31.
        v_embed_dim (int): Bridge width. Defaults to 768.
        v_depth (int): Number of bridge blocks. Defaults to 8.
        v_num_heads (int): Bridge heads. Defaults to 16.
        v_mlp_ratio (float): Bridge MLP ratio. Defaults to 4.0.
        max_seq_len (int): Longest prompt + generation. Defaults to 512.
        max_words (int): Training sequence budget (BOS + prompt + answer +
            EOS), truncated beyond. The released pretraining used 96.
            Defaults to 512.
        caption_instruction (str): Instruction of caption samples. Defaults
            to ``'Generate caption of this image'``.
        prompt_tmpl (str | dict, optional): None for the Alpaca templates; a
            ``dict(no_input=..., with_input=...)`` pair of templates with
            ``{instruction}`` / ``{input}`` fields; or one string formatted
            with ``instruction``, ``input`` and the data sample's fields.
            Defaults to None.
        context_key (str): Data-sample field holding an optional expert
            context (caption, OCR text) that is inserted as the Alpaca input.
            Defaults to 'context'.
        generation_cfg (dict): Overrides of :data:`GENERATION_DEFAULTS`
            (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``).
            Defaults to an empty dict.
        fused_attn (bool): SDPA in the LLaMA text attention and the bridge.
            Defaults to True.
        gradient_checkpointing (bool): Recompute LLaMA layers in backward.
            Defaults to False.
        data_preprocessor (dict, optional): Defaults to mmpretrain's
            ``MultiModalDataPreprocessor`` with CLIP mean/std and
            ``to_rgb=False``: the released models saw BGR images
            (docs/llama_adapter_v2.md#image-preprocessing).
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 llm: dict,
                 vision_encoder: dict,
                 tokenizer: Optional[dict] = None,
                 phase: str = 'finetune',
                 task: str = 'caption',
                 fusion: str = 'late',
                 bias_mode: str = 'mm7b',
                 w_lora: bool = False,
                 lora_rank: int = 16,
                 query_len: int = 10,
                 query_layer: int = 31,
                 v_embed_dim: int = 768,
                 v_depth: int = 8,
                 v_num_heads: int = 16,
                 v_mlp_ratio: float = 4.0,
                 max_seq_len: int = 512,
                 max_words: int = 512,
                 caption_instruction: str = CAPTION_INSTRUCTION,
                 prompt_tmpl: Optional[Union[str, dict]] = None,
                 context_key: str = 'context',
                 generation_cfg: Optional[dict] = None,
                 fused_attn: bool = True,
                 gradient_checkpointing: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        check_choice('phase', phase, PHASES)
        check_choice('task', task, TASKS)
        check_choice('fusion', fusion, FUSIONS)
        check_choice('bias_mode', bias_mode, BIAS_MODES)
        if data_preprocessor is None:
            data_preprocessor = dict(
                mean=CLIP_MEAN, std=CLIP_STD, to_rgb=False)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = dict(data_preprocessor)
            kind = data_preprocessor.setdefault(
                'type', 'mmpretrain.MultiModalDataPreprocessor')
            if kind == 'MultiModalDataPreprocessor':
                data_preprocessor['type'] = 'mmpretrain.' + kind
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)

        self.phase = phase
        self.task = task
        self.fusion = fusion
        self.bias_mode = bias_mode
        self.w_lora = w_lora
        self.lora_rank = lora_rank if w_lora else 0
        self.query_len = query_len
        self.query_layer = query_layer
        self.max_seq_len = max_seq_len
        self.max_words = max_words
        self.caption_instruction = caption_instruction
        self.prompt_tmpl = prompt_tmpl
        self.context_key = context_key
        self.gradient_checkpointing = gradient_checkpointing
        self.generation_cfg = self._check_generation_cfg(
            dict(GENERATION_DEFAULTS, **(generation_cfg or {})))

        # 1. tokenizer and LLaMA (frozen), with adapter layers injected
        self.tokenizer = build_tokenizer(tokenizer)
        self.llama = build_llama(
            llm, None if self.tokenizer is None else self.tokenizer.n_words)
        self.llama.is_init = True  # never re-initialise loaded weights
        inject_adapters(
            self.llama,
            bias_mode=bias_mode,
            lora_rank=self.lora_rank,
            fused_attn=fused_attn)
        config = self.llama.config
        self.dim = config.hidden_size
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        if not 0 < query_layer <= self.num_layers:
            raise ValueError(f'query_layer must be in [1, {self.num_layers}]'
                             f' for a {self.num_layers}-layer LLaMA, got '
                             f'{query_layer}')
        if fusion == 'early' and query_layer >= self.num_layers:
            raise ValueError(
                "fusion='early' feeds the visual tokens to the first layer, "
                f'so query_layer must be < {self.num_layers}, got '
                f'{query_layer}')

        # 2. frozen CLIP
        self.clip = build_clip_encoder(vision_encoder)
        clip_dim = self.clip.out_channels

        # 3. visual bridge (docs/llama_adapter_v2.md#visual-path), PyTorch
        # default init
        self.clip_proj = nn.Linear(clip_dim, v_embed_dim)
        self.clip_proj_norm = nn.LayerNorm(v_embed_dim)
        self.visual_query = nn.Embedding(query_len, v_embed_dim)
        self.visual_blocks = nn.ModuleList([
            VisualBlock(
                v_embed_dim, v_num_heads, v_mlp_ratio, fused_attn=fused_attn)
            for _ in range(v_depth)
        ])
        self.visual_proj = nn.Linear(v_embed_dim, self.dim)
        self.visual_proj_norm = nn.LayerNorm(self.dim)
        # 4. adaptation prompts, N(0, 1) like nn.Embedding
        self.adapter_query = nn.Embedding(query_len * query_layer, self.dim)

        self.set_phase(phase)
        self.register_state_dict_post_hook(_adapter_state_dict_hook)
        self.register_load_state_dict_pre_hook(_official_load_pre_hook)
        self.register_load_state_dict_post_hook(_quiet_frozen_missing_hook)

    # ------------------------------------------------------------------
    # parameters, phases and names
    # ------------------------------------------------------------------
    def official_name(self, name: str) -> Optional[str]:
        """Official LLaMA-Adapter name of one of our parameter names, or
        None for CLIP (which is never saved nor trained here). Names of an
        FSDP-wrapped model are accepted."""
        name = unwrapped_name(name)
        if name.startswith('clip.'):
            return None
        if name.startswith('llama.'):
            key = hf_to_official_key(name[len('llama.'):])
            return None if key is None else 'llama.' + key
        return name

    def param_side(self, name: str) -> Optional[str]:
        """``'visual'``, ``'language'`` or None (frozen base) for one of our
        parameter names (the two sides of the paper's joint training)."""
        official = self.official_name(name)
        if official is None:
            return None
        if official.startswith(_BRIDGE_KEYS):
            return 'visual'
        if official == 'adapter_query.weight':
            return 'language'
        if official.startswith('llama.'):
            if _FROZEN_BASE.match(official[len('llama.'):]):
                return None
            m = _OFFICIAL_LAYER.match(official)
            if (self.fusion == 'early' and m is not None
                    and official.endswith('attention.gate')
                    and int(m.group(1)) == 0):
                # the zero-init attention of the early visual tokens
                return 'visual'
            return 'language'
        return None

    def _in_phase(self, name: str, phase: str) -> bool:
        official = self.official_name(name)
        if official is None or phase == 'frozen':
            return False
        if phase == 'pretrain':
            return any(k in official for k in _PRETRAIN_KEYS)
        if phase == 'finetune':
            if not official.startswith('llama.'):
                return False
            keys = ['norm', 'bias', 'lora']
            if self.bias_mode in ('c65b', 'paper'):
                keys.append('.scale')
            return any(k in official for k in keys)
        return self.param_side(name) is not None  # joint

    def set_phase(self, phase: str) -> None:
        """Freeze everything, then unfreeze the group of ``phase``.

        Trainable tensors are kept in float32 (like the released code) even
        when the LLaMA is loaded in half precision; train such models with
        mixed precision (``AmpOptimWrapper``).
        """
        check_choice('phase', phase, PHASES)
        self.phase = phase
        for name, param in self.named_parameters():
            trainable = self._in_phase(name, phase)
            if trainable and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()
            param.requires_grad_(trainable)

    def trainable_parameters(self) -> Dict[str, nn.Parameter]:
        """Our names -> trainable parameters of the current phase."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen encoder
        return self

    # ------------------------------------------------------------------
    # forward pieces
    # ------------------------------------------------------------------
    def forward_visual(self, images: torch.Tensor) -> torch.Tensor:
        """Visual query V (B, query_len, dim) of normalised images."""
        if images.dim() != 4:
            raise ValueError('images must be (B, 3, H, W), got shape '
                             f'{tuple(images.shape)}')
        param = next(self.clip.parameters())
        with torch.no_grad():
            feats = self.clip(images.to(param.dtype))
        feats = feats.float()
        x = self.clip_proj_norm(self.clip_proj(feats))
        query = self.visual_query.weight[None].expand(x.shape[0], -1, -1)
        x = torch.cat([query, x], dim=1)
        for block in self.visual_blocks:
            x = block(x)
        x = x[:, :self.query_len]
        return self.visual_proj_norm(self.visual_proj(x))

    def forward_llm(self,
                    tokens: torch.Tensor,
                    visual: Optional[torch.Tensor],
                    attention_mask: Optional[torch.Tensor] = None,
                    position_ids: Optional[torch.Tensor] = None,
                    past_key_values=None,
                    last_only: bool = False) -> torch.Tensor:
        """Logits of the adapter LLaMA for tokens (B, T) and visual query V.

        Args:
            tokens (torch.Tensor): (B, T) token ids.
            visual (torch.Tensor, optional): (B, query_len, dim).
            attention_mask (torch.Tensor, optional): (B, past + T) padding
                mask. Defaults to None.
            position_ids (torch.Tensor, optional): (B, T). Defaults to None.
            past_key_values (optional): transformers ``Cache``.
            last_only (bool): Logits of the last position only.

        Returns:
            torch.Tensor: (B, T or 1, vocab).
        """
        embeds = self.llama.model.embed_tokens(tokens)
        prompts = layer_prompts(self.adapter_query.weight, visual,
                                self.num_layers, self.query_layer,
                                self.query_len, self.fusion)
        return adapter_llama_forward(
            self.llama,
            embeds,
            prompts,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            last_only=last_only,
            gradient_checkpointing=self.gradient_checkpointing
            and self.training)

    # ------------------------------------------------------------------
    # text
    # ------------------------------------------------------------------
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError('this LLaMAAdapterV2 was built without a '
                               'tokenizer; pass tokenizer=dict(...)')
        return self.tokenizer

    @staticmethod
    def _first(value):
        if isinstance(value, (list, tuple)):
            return value[0] if value else ''
        return value

    def _is_caption(self, sample) -> bool:
        return not sample.get('question') and 'gt_caption' in sample

    def build_prompt(self, sample) -> str:
        """Prompt text of a data sample (template filled, answer not)."""
        if sample.get('question'):
            instruction = str(sample.get('question'))
        elif self.task == 'caption' or 'gt_caption' in sample:
            instruction = self.caption_instruction
        else:
            raise ValueError(f"task '{self.task}' needs a `question` in each "
                             'data sample')
        inp = sample.get('input')
        context = sample.get(self.context_key)
        tmpl = self.prompt_tmpl
        if tmpl is None:
            return format_prompt(instruction, inp, context)
        if isinstance(tmpl, dict):
            return format_prompt(
                instruction,
                inp,
                context,
                no_input_tmpl=tmpl.get('no_input', PROMPT_NO_INPUT),
                with_input_tmpl=tmpl.get('with_input', PROMPT_WITH_INPUT))
        fields = dict(sample.to_dict())
        fields.update(
            instruction=instruction,
            input='\n'.join(
                s for s in (inp, context) if isinstance(s, str) and s))
        return tmpl.format(**fields)

    def build_target(self, sample) -> str:
        """Answer text of a training sample (caption or answer)."""
        if self._is_caption(sample):
            return str(self._first(sample.get('gt_caption')))
        answer = sample.get('gt_answer')
        if answer is None:
            raise ValueError('training samples need `gt_caption` or '
                             '`gt_answer`')
        weights = sample.get('gt_answer_weight')
        if isinstance(answer, (list, tuple)) and weights is not None \
                and len(weights) == len(answer):
            answer = answer[int(torch.as_tensor(weights).argmax())]
        return str(self._first(answer))

    def tokenize_for_training(self, samples: Sequence):
        """Token ids and labels of training samples
        (docs/llama_adapter_v2.md#training-loss,
        docs/llama_adapter_v2.md#data-formats).

        BOS + prompt + answer + EOS, truncated to ``max_words`` and right
        padded with 0; labels are 0 (ignored) over the prompt and padding.

        Returns:
            tuple: ``(tokens, labels)``, both (B, T) long tensors.
        """
        tok = self._require_tokenizer()
        rows, labels = [], []
        for sample in samples:
            prompt = self.build_prompt(sample)
            full = tok.encode(
                prompt + self.build_target(sample), bos=True, eos=True)
            n_prompt = len(tok.encode(prompt, bos=True, eos=False))
            full = full[:self.max_words]
            label = [0] * min(n_prompt, len(full)) + full[n_prompt:]
            rows.append(full)
            labels.append(label)
        length = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        target = torch.zeros(len(rows), length, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            tokens[i, :len(r)] = torch.tensor(r)
            target[i, :len(lab)] = torch.tensor(lab)
        return tokens, target

    # ------------------------------------------------------------------
    # mmengine faces
    # ------------------------------------------------------------------
    def forward(self,
                images: Optional[torch.Tensor],
                data_samples: Optional[list] = None,
                mode: str = 'loss'):
        """``mode='loss'``: dict of losses; ``'predict'``: data samples with
        ``pred_caption`` / ``pred_answer``."""
        if mode == 'loss':
            return self.loss(images, data_samples)
        if mode == 'predict':
            return self.predict(images, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}"; use "loss" or "predict"')

    def _visual_for(self, images, data_samples):
        if images is None:
            return None
        if images.dim() == 5:
            if images.shape[1] != 1:
                raise ValueError('one image per sample is supported, got '
                                 f'images of shape {tuple(images.shape)}')
            images = images[:, 0]
        if data_samples is not None:
            keep = torch.tensor(
                [not s.get('text_only', False) for s in data_samples],
                dtype=images.dtype,
                device=images.device)
            if not bool(keep.all()):
                # text-only instruction samples: a zero image in normalised
                # space, like the released finetuning
                # (docs/llama_adapter_v2.md#data-formats)
                images = images * keep[:, None, None, None]
        return self.forward_visual(images)

    def _token_loss(self, tokens, labels, visual):
        """Sum of token cross-entropies and their count."""
        logits = self.forward_llm(tokens, visual)
        logits = logits[:, :-1].float()
        labels = labels[:, 1:]
        count = (labels != 0).sum()
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=0,
            reduction='sum')
        # no supervised token: keep the graph, give zero gradients
        loss = loss + 0.0 * logits.mean()
        return loss, count

    @contextmanager
    def _frozen(self, params: List[nn.Parameter]):
        """Temporarily stop gradients into ``params`` (joint training)."""
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    def loss(self, images: Optional[torch.Tensor],
             data_samples: Sequence) -> Dict[str, torch.Tensor]:
        """Next-token cross-entropy over the answer tokens (ignore id 0).

        In the ``'joint'`` phase, image-text (caption) samples update only
        the visual side and instruction samples only the language side: the
        caption samples run with the language-side parameters frozen and the
        instruction samples with the visual side frozen (visual query
        detached, early-fusion gate frozen), then both token losses are
        averaged together.
        """
        if not data_samples:
            raise ValueError('mode="loss" needs data_samples')
        tokens, labels = self.tokenize_for_training(data_samples)
        device = self.adapter_query.weight.device
        tokens, labels = tokens.to(device), labels.to(device)
        visual = self._visual_for(images, data_samples)
        if self.phase != 'joint':
            total, count = self._token_loss(tokens, labels, visual)
            return dict(loss=total / count.clamp(min=1))

        is_cap = torch.tensor([self._is_caption(s) for s in data_samples],
                              device=device)
        sides = dict(visual=[], language=[])
        for n, p in self.named_parameters():
            if p.requires_grad and self.param_side(n) in sides:
                sides[self.param_side(n)].append(p)
        out, total, count = {}, 0.0, 0
        # caption first: autocast caches casts of weights that require grad
        for kind, sel, frozen in (('caption', is_cap, sides['language']),
                                  ('instruction', ~is_cap, sides['visual'])):
            if not bool(sel.any()):
                continue
            vis = None if visual is None else visual[sel]
            if kind == 'instruction' and vis is not None:
                vis = vis.detach()
            with self._frozen(frozen):
                part, n = self._token_loss(tokens[sel], labels[sel], vis)
            out[f'{kind}_ce'] = (part / n.clamp(min=1)).detach()
            total, count = total + part, count + n
        out['loss'] = total / torch.as_tensor(count).clamp(min=1)
        return out

    @torch.no_grad()
    def predict(self,
                images: Optional[torch.Tensor],
                data_samples: Optional[list] = None,
                **generation_cfg) -> list:
        """Generate answers; per-call ``generation_cfg`` overrides the
        model's. Writes ``pred_caption`` (task ``'caption'``) or
        ``pred_answer``."""
        from mmpretrain.structures import DataSample
        if data_samples is None:
            if images is None:
                raise ValueError('predict needs images or data_samples')
            data_samples = [DataSample() for _ in range(images.shape[0])]
        prompts = [self.build_prompt(s) for s in data_samples]
        visual = self._visual_for(images, data_samples)
        texts = self.generate_from_visual(visual, prompts, **generation_cfg)
        for sample, text in zip(data_samples, texts):
            if self.task == 'caption':
                sample.pred_caption = text
            else:
                sample.pred_answer = text
        return data_samples

    @torch.no_grad()
    def generate(self, images: Optional[torch.Tensor], prompts: List[str],
                 **generation_cfg) -> List[str]:
        """Generate texts for normalised images and filled prompts."""
        visual = None if images is None else self.forward_visual(images)
        return self.generate_from_visual(visual, prompts, **generation_cfg)

    @torch.no_grad()
    def generate_from_visual(self, visual: Optional[torch.Tensor],
                             prompts: List[str],
                             **generation_cfg) -> List[str]:
        """Batched decoding with a KV cache
        (docs/llama_adapter_v2.md#generation).

        Prompts are left padded (positions restart at 0 for each sample);
        every sample stops at its own EOS; at most ``max_new_tokens`` and at
        most ``max_seq_len`` tokens in all.
        """
        from transformers import DynamicCache
        cfg = self._check_generation_cfg(
            dict(self.generation_cfg, **generation_cfg))
        tok = self._require_tokenizer()
        device = self.adapter_query.weight.device
        ids = [tok.encode(p, bos=True, eos=False) for p in prompts]
        longest = max(len(i) for i in ids)
        steps = min(cfg['max_new_tokens'], self.max_seq_len - longest)
        if steps <= 0:
            raise ValueError(f'prompt of {longest} tokens leaves no room in '
                             f'max_seq_len={self.max_seq_len}')
        b = len(ids)
        tokens = torch.zeros(b, longest, dtype=torch.long, device=device)
        mask = torch.zeros(b, longest, dtype=torch.long, device=device)
        for i, row in enumerate(ids):
            tokens[i, longest - len(row):] = torch.tensor(row)
            mask[i, longest - len(row):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generator = None
        if cfg.get('seed') is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(cfg['seed']))
        cache = DynamicCache()
        logits = self.forward_llm(tokens, visual, mask, positions, cache,
                                  True)[:, -1]
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        out = []
        for step in range(steps):
            nxt = sample_next_token(logits, cfg['temperature'], cfg['top_p'],
                                    generator)
            nxt = nxt.masked_fill(finished, 0)
            out.append(nxt)
            finished = finished | (nxt == tok.eos_id)
            if bool(finished.all()) or step == steps - 1:
                break
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            positions = positions[:, -1:] + 1
            logits = self.forward_llm(nxt[:, None], visual, mask, positions,
                                      cache, True)[:, -1]
        out = torch.stack(out, dim=1).tolist()
        texts = []
        for row in out:
            if tok.eos_id in row:
                row = row[:row.index(tok.eos_id)]
            texts.append(tok.decode(row).strip())
        return texts

    @staticmethod
    def _check_generation_cfg(cfg: dict) -> dict:
        cfg = dict(cfg)
        if 'max_gen_len' in cfg:  # the released name
            cfg['max_new_tokens'] = cfg.pop('max_gen_len')
        allowed = {'max_new_tokens', 'temperature', 'top_p', 'seed'}
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f'unknown generation_cfg keys {sorted(unknown)};'
                             f' allowed: {sorted(allowed)}')
        return cfg

    # ------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------
    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """The adapter-side tensors under official names (what
        :meth:`state_dict` returns)."""
        return dict(self.state_dict())

    def load_adapter(self, path: str, strict: bool = True) -> None:
        """Load a released adapter file (``{'model', 'config'}``) or one we
        saved, with ``weights_only=True``; shape mismatches raise a
        ``ValueError`` naming the file."""
        from .checkpoint import load_adapter_file
        state, config = load_adapter_file(path)
        self._check_adapter_config(config, path)
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from e
        if strict and (missing or unexpected):
            raise ValueError(f'{path}: missing keys {missing[:8]}, '
                             f'unexpected keys {unexpected[:8]}')

    def _check_adapter_config(self, config: dict, source: str) -> None:
        if not config:
            return
        if 'w_lora' in config and bool(config['w_lora']) != self.w_lora:
            raise ValueError(
                f'{source} was trained with w_lora={config["w_lora"]} but the '
                f'model has w_lora={self.w_lora}; use the matching config')
        if self.w_lora and config.get('lora_rank', self.lora_rank) \
                != self.lora_rank:
            raise ValueError(f'{source} has lora_rank={config["lora_rank"]} '
                             f'but the model has lora_rank={self.lora_rank}')


# ----------------------------------------------------------------------
# state-dict hooks (plain functions: torch marks public-API hooks)
# ----------------------------------------------------------------------
def _adapter_state_dict_hook(module, state_dict, prefix, local_metadata):
    """Keep only adapter-side tensors, under the official names/layout.

    Under FSDP the state dict is left whole: FSDP's own hook on the root
    unit, which runs after this one, expects every tensor of the unit
    (e.g. the frozen token embedding); :class:`LLaMAAdapterV2CheckpointHook`
    then applies the same filter to the gathered checkpoint.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    if any(isinstance(m, FSDP) for m in module.modules()):
        return
    reduce_to_adapter_state(module, state_dict, prefix)


def reduce_to_adapter_state(module: 'LLaMAAdapterV2',
                            state_dict: dict,
                            prefix: str = '') -> dict:
    """Reduce a full state dict of ``module`` (our names, under
    ``prefix``) to the adapter-side tensors under the official names and
    layout, in place; returns ``state_dict``."""
    n_heads = module.num_heads
    n_kv = module.llama.config.num_key_value_heads
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        value = state_dict.pop(key)
        if rel.startswith('data_preprocessor.'):
            state_dict[key] = value
            continue
        official = module.official_name(rel)
        if official is None:
            continue
        if official.startswith('llama.'):
            if _FROZEN_BASE.match(official[len('llama.'):]):
                continue
            kind = needs_row_permutation(official, module.bias_mode)
            if kind is not None:
                value = hf_to_meta_rows(value,
                                        n_heads if kind == 'q' else n_kv)
        state_dict[prefix + official] = value
    return state_dict


@HOOKS.register_module()
class LLaMAAdapterV2CheckpointHook(Hook):
    """Save only the adapter-side tensors of an FSDP-trained adapter.

    A plain or DDP model does this in its own state-dict hook; under FSDP
    that hook must leave the state dict whole (see
    :func:`_adapter_state_dict_hook`), so this hook filters the gathered
    checkpoint before it is written (``before_save_checkpoint``, called by
    ``FlexibleRunner`` with the full state dict on rank 0). The checkpoint
    then holds what a replicated run saves. The FSDP configs of the adapter
    add it to ``custom_hooks``; it does nothing for other models and for
    already reduced state dicts.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model
        model = getattr(model, 'module', model)
        state = checkpoint.get('state_dict')
        if not isinstance(model, LLaMAAdapterV2) or not state:
            return
        frozen = 'llama.model.embed_tokens.weight'
        if frozen in state:
            checkpoint['state_dict'] = reduce_to_adapter_state(model, state)


def _official_load_pre_hook(module, state_dict, prefix, local_metadata, strict,
                            missing_keys, unexpected_keys, error_msgs):
    """Map official names/layout to ours and check shapes
    (docs/llama_adapter_v2.md#checkpoints)."""
    # a released file given directly: {'model': {...}, 'config': {...}}
    if isinstance(state_dict.get(prefix + 'model'), dict):
        inner = state_dict.pop(prefix + 'model')
        config = state_dict.pop(prefix + 'config', None) or {}
        module._check_adapter_config(config, 'checkpoint')
        for k, v in inner.items():
            state_dict[prefix + k] = v
    own = dict(module.named_parameters())
    n_heads = module.num_heads
    n_kv = module.llama.config.num_key_value_heads
    dropped = 0
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        if rel.startswith('llma.'):
            rel = 'llama.' + rel[len('llma.'):]
        if rel.startswith('clip.') and rel not in own:
            # the official full checkpoints carry OpenAI CLIP weights; our
            # CLIP is loaded by its own builder
            state_dict.pop(key)
            dropped += 1
            continue
        value = state_dict[key]
        if rel.startswith(('llama.model.', 'llama.lm_head.')) or \
                not rel.startswith('llama.'):
            target = rel
        else:
            m = _OFFICIAL_LAYER.match(rel)
            if m is not None and int(m.group(1)) >= module.num_layers:
                raise ValueError(
                    f'{rel} belongs to layer {m.group(1)} but the LLaMA has '
                    f'{module.num_layers} layers; wrong LLaMA size?')
            if 'lora' in rel and not module.w_lora:
                raise ValueError(
                    f'{rel}: the checkpoint has LoRA weights but the model '
                    'was built with w_lora=False')
            hf = official_to_hf_key(rel[len('llama.'):])
            if hf is None:
                continue  # left for the unexpected-keys report
            target = 'llama.' + hf
            kind = needs_row_permutation(rel, module.bias_mode)
            if kind is not None and value.dim() >= 1:
                value = meta_to_hf_rows(value,
                                        n_heads if kind == 'q' else n_kv)
        param = own.get(target)
        if param is not None and tuple(param.shape) != tuple(value.shape):
            raise ValueError(_shape_message(module, rel, value, param))
        state_dict.pop(key)
        state_dict[prefix + target] = value
    if dropped:
        print_log(
            f'LLaMAAdapterV2: ignored {dropped} official CLIP tensors',
            logger='current')


def _shape_message(module, key, value, param) -> str:
    got, want = tuple(value.shape), tuple(param.shape)
    msg = f'{key} has shape {got} but the model expects {want}'
    if key == 'clip_proj.weight' and got[0] == want[0]:
        msg += (f': the checkpoint was trained on {got[1]}-d CLIP features '
                f'and this CLIP outputs {want[1]}-d ones (released '
                'LLaMA-Adapter V2 files need CLIP ViT-L/14, 768-d; 512-d is '
                'ViT-B)')
    elif key.startswith(('llama.', 'visual_proj', 'adapter_query')):
        msg += (f': the checkpoint was made for another LLaMA size (this '
                f'LLaMA has dim={module.dim}, {module.num_layers} layers; '
                'LLaMA-7B is 4096 / 32)')
    return msg


def _quiet_frozen_missing_hook(module, incompatible_keys) -> None:
    """Frozen CLIP / LLaMA weights are not in adapter checkpoints."""
    missing = incompatible_keys.missing_keys
    for key in list(missing):
        official = module.official_name(key) if key in dict(
            module.named_parameters()) else None
        if key.startswith('clip.') or (
                official is not None and official.startswith('llama.')
                and _FROZEN_BASE.match(official[len('llama.'):])):
            missing.remove(key)

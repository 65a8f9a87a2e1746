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
the official names, so released adapter files load directly (the state-dict
hooks of :mod:`.hooks`). Prompts and tokenisation live in :mod:`.prompts`.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn

from visionllama_mm.engine.fsdp import unwrapped_name
from visionllama_mm.registry import MODELS
from visionllama_mm.utils import check_choice
from . import prompts as _prompts
from .adapter_layers import (BIAS_MODES, GradientStop, SideParams,
                             adapter_llama_forward, inject_adapters,
                             layer_prompts)
from .checkpoint import (hf_to_official_key, is_frozen_base,
                         official_layer_index)
from .generation import GENERATION_DEFAULTS, sample_next_token
# LLaMAAdapterV2CheckpointHook is re-exported from here, its former home
from .hooks import (LLaMAAdapterV2CheckpointHook, adapter_state_dict_hook,
                    official_load_pre_hook, quiet_frozen_missing_hook)
from .llm import build_llama, build_tokenizer
from .prompts import CAPTION_INSTRUCTION
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

        # joint training keeps one side out of each forward pass
        # (docs/llama_adapter_v2.md#joint-training); set_phase attaches it
        self.grad_stop = GradientStop()
        self.set_phase(phase)
        # state dicts in the official names / layout (see :mod:`.hooks`)
        self.register_state_dict_post_hook(adapter_state_dict_hook)
        self.register_load_state_dict_pre_hook(official_load_pre_hook)
        self.register_load_state_dict_post_hook(quiet_frozen_missing_hook)

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
            if is_frozen_base(official):
                return None
            if (self.fusion == 'early' and official.endswith('attention.gate')
                    and official_layer_index(official) == 0):
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
        # the sides depend on the fusion too; refresh them with the phase
        self.grad_stop.enabled = phase == 'joint'
        for prefix, module in self.named_modules():
            if isinstance(module, SideParams):
                module.attach_gradient_stop(
                    self.grad_stop, {
                        name: self.param_side(f'{prefix}.{name}')
                        for name, _ in module.named_parameters()
                    })

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
        adapter_query = self.grad_stop(self.adapter_query.weight,
                                       self.param_side('adapter_query.weight'))
        prompts = layer_prompts(adapter_query, visual, self.num_layers,
                                self.query_layer, self.query_len, self.fusion)
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

    def build_prompt(self, sample) -> str:
        """Prompt text of a data sample (template filled, answer not), see
        :func:`.prompts.build_prompt`."""
        return _prompts.build_prompt(sample, self.task,
                                     self.caption_instruction,
                                     self.prompt_tmpl, self.context_key)

    def build_target(self, sample) -> str:
        """Answer text of a training sample (caption or answer)."""
        return _prompts.build_target(sample)

    def tokenize_for_training(self, samples: Sequence):
        """Token ids and labels of training samples, see
        :func:`.prompts.tokenize_for_training`.

        Returns:
            tuple: ``(tokens, labels)``, both (B, T) long tensors.
        """
        return _prompts.tokenize_for_training(
            self._require_tokenizer(), [self.build_prompt(s) for s in samples],
            [self.build_target(s) for s in samples], self.max_words)

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

    def loss(self, images: Optional[torch.Tensor],
             data_samples: Sequence) -> Dict[str, torch.Tensor]:
        """Next-token cross-entropy over the answer tokens (ignore id 0).

        In the ``'joint'`` phase, image-text (caption) samples update only
        the visual side and instruction samples only the language side: the
        caption samples run with the language side's gradient stopped and
        the instruction samples with the visual side's (visual query
        detached, early-fusion gate stopped), then both token losses are
        averaged together (docs/llama_adapter_v2.md#joint-training).
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

        is_cap = torch.tensor(
            [_prompts.is_caption_sample(s) for s in data_samples],
            device=device)
        out, total, count = {}, 0.0, 0
        for kind, sel, stopped in (('caption', is_cap, 'language'),
                                   ('instruction', ~is_cap, 'visual')):
            if not bool(sel.any()):
                continue
            vis = None if visual is None else visual[sel]
            if kind == 'instruction' and vis is not None:
                vis = vis.detach()
            with self.grad_stop.stopping([stopped]):
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
        tokens, mask = _prompts.tokenize_prompts(tok, prompts, device)
        b, longest = tokens.shape
        steps = min(cfg['max_new_tokens'], self.max_seq_len - longest)
        if steps <= 0:
            raise ValueError(f'prompt of {longest} tokens leaves no room in '
                             f'max_seq_len={self.max_seq_len}')
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

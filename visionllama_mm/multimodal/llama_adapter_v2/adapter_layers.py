"""LLaMA-Adapter V2 layers on top of transformers' Llama.

The language model is transformers' ``LlamaForCausalLM`` (embeddings,
decoder layers, RMSNorm, MLP, rotary tables and KV cache are theirs). This
module only

* swaps each linear layer of the decoder for :class:`AdapterLinear`, which
  keeps the frozen weight and adds the tunable bias / scale / LoRA of the
  chosen ``bias_mode`` (docs/llama_adapter_v2.md#bias-scale-and-norm-tuning,
  docs/llama_adapter_v2.md#lora);
* swaps each attention module for :class:`AdapterLlamaAttention`, the same
  attention plus the zero-initialised gated adapter attention over 10 prompt
  tokens (docs/llama_adapter_v2.md#gated-adapter-attention);
* swaps each RMSNorm for :class:`AdapterRMSNorm` (the same computation);
* runs the decoder layers in :func:`adapter_llama_forward`, which hands each
  layer its prompt (so gradient checkpointing recomputes with it).

The tunable tensors of these modules are read through :class:`GradientStop`,
which the joint training phase uses to keep one side's parameters out of a
forward pass (docs/llama_adapter_v2.md#joint-training) without touching
``requires_grad``: under FSDP the tensors a module computes with are views of
a flat parameter, whose flags cannot be toggled per tensor.

Wrapping reproduces the official numerics: the released model computes the
same functions in Meta's adjacent-pair RoPE layout, and transformers' layout
differs only by a fixed permutation of the q/k rows inside each head, which
:mod:`.checkpoint` applies to the weights and to the adapter tensors (q bias,
q/k LoRA-B rows); dot products, and therefore the logits, are unchanged.
"""
import math
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from visionllama_mm.utils import check_choice

__all__ = [
    'BIAS_MODES', 'GradientStop', 'AdapterLinear', 'AdapterLlamaAttention',
    'AdapterRMSNorm', 'inject_adapters', 'build_attention_mask',
    'adapter_llama_forward', 'linear_tuning'
]

#: Which tuning each linear layer gets per ``bias_mode``
#: (docs/llama_adapter_v2.md#bias-scale-and-norm-tuning): ``(bias, scale)``
#: with scale in ``{None, 'input', 'output'}``.
BIAS_MODES = ('mm7b', 'c65b', 'paper', 'none')
_ATTN = ('q_proj', 'k_proj', 'v_proj', 'o_proj')
_MLP = ('gate_proj', 'up_proj', 'down_proj')


def linear_tuning(bias_mode: str, name: str):
    """Return ``(bias, scale)`` of a decoder linear layer for a bias mode.

    Args:
        bias_mode (str): One of :data:`BIAS_MODES`.

            - ``'mm7b'``: released multimodal 7B code, ``y = Wx + b`` on
              q, o, w1, w2, w3 (not k, v), no scale.
            - ``'c65b'``: released 65B chat code, ``y = W(s * x) + b`` on all
              seven linear layers (input-channel scale).
            - ``'paper'``: the paper, ``y = s * (Wx + b)`` on all seven
              (output-channel scale).
            - ``'none'``: no bias and no scale.
        name (str): transformers' module name (``'q_proj'``, ...,
            ``'down_proj'``).

    Returns:
        tuple: ``(bias: bool, scale: Optional[str])``.
    """
    check_choice('bias_mode', bias_mode, BIAS_MODES)
    if name not in _ATTN + _MLP:
        raise ValueError(f'unknown linear layer {name!r}')
    if bias_mode == 'mm7b':
        return name not in ('k_proj', 'v_proj'), None
    if bias_mode == 'c65b':
        return True, 'input'
    if bias_mode == 'paper':
        return True, 'output'
    return False, None


class _GradientGate(torch.autograd.Function):
    """Identity forward; backward passes the gradient or none at all."""

    @staticmethod
    def forward(ctx, tensor, passes):
        ctx.passes = passes
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        return (grad if ctx.passes else None), None


class GradientStop:
    """The parameter groups ("sides") that pass no gradient right now.

    One instance is shared by every adapter module of a model (see
    :meth:`SideParams.attach_gradient_stop`). When ``enabled`` (the joint
    phase), every tensor with a side goes through an identity whose backward
    passes its gradient only if the side is not stopped by :meth:`stopping`
    at forward time. The forward graph, and so what it saves, is the same
    whichever sides are stopped: a gradient-checkpointed layer (ours or
    FSDP's activation checkpointing) recomputes the same tensors outside the
    ``with`` block. This works the same on a plain model, under DDP and under
    FSDP (where a module computes with views of a flat parameter during
    forward, whose ``requires_grad`` cannot be toggled).
    """

    def __init__(self) -> None:
        self.enabled = False
        self.sides = frozenset()

    @contextmanager
    def stopping(self, sides: Iterable[str]):
        """Stop the gradient of ``sides`` inside the ``with`` block."""
        previous, self.sides = self.sides, frozenset(sides)
        try:
            yield
        finally:
            self.sides = previous

    def __call__(self, tensor: Optional[torch.Tensor],
                 side: Optional[str]) -> Optional[torch.Tensor]:
        if not self.enabled or tensor is None or side is None:
            return tensor
        return _GradientGate.apply(tensor, side not in self.sides)


class SideParams:
    """Mixin of the adapter modules: read own tunable tensors through the
    model's :class:`GradientStop`."""

    grad_stop: Optional[GradientStop] = None
    param_sides: Dict[str, Optional[str]] = {}

    def attach_gradient_stop(self, grad_stop: GradientStop,
                             param_sides: Dict[str, Optional[str]]) -> None:
        """Share ``grad_stop``; ``param_sides`` maps each own parameter name
        (``'bias'``, ``'lora_l1.weight'``, ...) to its side or None."""
        self.grad_stop = grad_stop
        self.param_sides = dict(param_sides)

    def _param(self, name: str,
               tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if self.grad_stop is None:
            return tensor
        return self.grad_stop(tensor, self.param_sides.get(name))


class AdapterLinear(SideParams, nn.Module):
    """A frozen linear layer with LLaMA-Adapter's tunable extras.

    ``y = W x`` plus, depending on the arguments, a bias ``b`` (zero init),
    a scale ``s`` (one init) on the input (``y = W(s*x) + b``) or on the
    output (``y = s*(Wx + b)``), and a LoRA branch ``B(A x)`` (A: PyTorch's
    default init, B: zeros, no scaling, no dropout;
    docs/llama_adapter_v2.md#lora). The tunable tensors are kept in float32 and
    cast to the input dtype when used.

    Args:
        weight (nn.Parameter): The (frozen) weight, shape (out, in). It is
            shared, not copied.
        bias (bool): Whether to add a bias. Defaults to False.
        scale (str, optional): ``'input'``, ``'output'`` or None. Defaults to
            None.
        lora_rank (int): LoRA rank, 0 for none. Defaults to 0.
    """

    def __init__(self,
                 weight: nn.Parameter,
                 bias: bool = False,
                 scale: Optional[str] = None,
                 lora_rank: int = 0) -> None:
        super().__init__()
        if scale not in (None, 'input', 'output'):
            raise ValueError("scale must be None, 'input' or 'output', "
                             f'got {scale!r}')
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        factory = dict(device=weight.device, dtype=torch.float32)
        self.bias = nn.Parameter(torch.zeros(self.out_features, **
                                             factory)) if bias else None
        self.scale_on = scale
        if scale is None:
            self.scale = None
        else:
            n = self.in_features if scale == 'input' else self.out_features
            self.scale = nn.Parameter(torch.ones(n, **factory))
        self.lora_rank = lora_rank
        if lora_rank > 0:
            self.lora_l1 = nn.Linear(
                self.in_features, lora_rank, bias=False, **factory)
            self.lora_l2 = nn.Linear(
                lora_rank, self.out_features, bias=False, **factory)
            if self.lora_l2.weight.device.type != 'meta':
                nn.init.zeros_(self.lora_l2.weight)
        else:
            self.lora_l1 = self.lora_l2 = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> 'AdapterLinear':
        """Wrap an existing ``nn.Linear`` (its weight is shared)."""
        if linear.bias is not None:
            raise ValueError('LLaMA linear layers carry no bias; got a '
                             f'biased {linear}')
        return cls(linear.weight, **kwargs)

    def forward(self, x: torch.Tensor, lora: bool = True) -> torch.Tensor:
        """Apply the layer; ``lora=False`` skips the LoRA branch."""
        h = x
        scale = self._param('scale', self.scale)
        if self.scale_on == 'input':
            h = h * scale.to(x.dtype)
        bias = self._param('bias', self.bias)
        bias = None if bias is None else bias.to(x.dtype)
        y = F.linear(h, self.weight, bias)
        if self.scale_on == 'output':
            y = y * scale.to(y.dtype)
        if lora and self.lora_l1 is not None:
            lora_a = self._param('lora_l1.weight', self.lora_l1.weight)
            lora_b = self._param('lora_l2.weight', self.lora_l2.weight)
            y = y + F.linear(
                F.linear(x, lora_a.to(x.dtype)), lora_b.to(x.dtype))
        return y

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, '
                f'out_features={self.out_features}, '
                f'bias={self.bias is not None}, scale={self.scale_on}, '
                f'lora_rank={self.lora_rank}')


class AdapterRMSNorm(SideParams, nn.Module):
    """transformers' ``LlamaRMSNorm`` computation with its (tunable) weight
    read through the model's :class:`GradientStop`.

    ``y = w * (x / sqrt(mean(x^2) + eps))``, normalised in float32 and cast
    back to the input dtype before the weight, as transformers does.

    Args:
        weight (nn.Parameter): The weight, shape (dim,). It is shared, not
            copied.
        eps (float): ``variance_epsilon``.
    """

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    @classmethod
    def from_norm(cls, norm: nn.Module) -> 'AdapterRMSNorm':
        """Wrap a ``LlamaRMSNorm`` (its weight is shared)."""
        return cls(norm.weight, norm.variance_epsilon)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance +
                                                    self.variance_epsilon)
        weight = self._param('weight', self.weight)
        return weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f'{tuple(self.weight.shape)}, eps={self.variance_epsilon}'


class AdapterLlamaAttention(SideParams, nn.Module):
    """transformers' Llama attention plus gated adapter attention.

    For prompt tokens P of one layer
    (docs/llama_adapter_v2.md#gated-adapter-attention), per head::

        K_p = P Wk^T,  V_p = P Wv^T        (frozen weights, no RoPE, no LoRA)
        O   = softmax(q K^T / sqrt(d) + M) V
              + tanh(g) [* s_new] softmax(q K_p^T / sqrt(d)) V_p

    with its own softmax over the prompt tokens, a per-head gate ``g``
    initialised to zero (so the layer starts as the plain LLaMA layer) and,
    with LoRA, the extra scalar ``new_gate`` ``s_new`` initialised to one.
    K_p and V_p go through the bias/scale of ``k_proj``/``v_proj`` when the
    bias mode gives them one (``'c65b'``, ``'paper'``).

    Args:
        base (nn.Module): transformers' ``LlamaAttention`` (any
            implementation); its projections are wrapped, not copied.
        bias_mode (str): See :func:`linear_tuning`. Defaults to 'mm7b'.
        lora_rank (int): LoRA rank on q, k, v, o (0: none). Defaults to 0.
        fused_attn (bool): Use ``F.scaled_dot_product_attention`` for the
            text part; False uses the explicit fp32 softmax of the released
            code. Defaults to True.
    """

    def __init__(self,
                 base: nn.Module,
                 bias_mode: str = 'mm7b',
                 lora_rank: int = 0,
                 fused_attn: bool = True) -> None:
        super().__init__()
        self.layer_idx = base.layer_idx
        self.num_heads = base.num_heads
        self.head_dim = base.head_dim
        self.num_key_value_heads = base.num_key_value_heads
        self.num_key_value_groups = base.num_key_value_groups
        self.fused_attn = fused_attn
        for name in _ATTN:
            bias, scale = linear_tuning(bias_mode, name)
            setattr(
                self, name,
                AdapterLinear.from_linear(
                    getattr(base, name),
                    bias=bias,
                    scale=scale,
                    lora_rank=lora_rank))
        device = base.q_proj.weight.device
        self.gate = nn.Parameter(
            torch.zeros(1, self.num_heads, 1, 1, device=device))
        self.new_gate = nn.Parameter(torch.ones(
            1, 1, 1, 1, device=device)) if lora_rank > 0 else None

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_key_value_groups == 1:
            return x
        return x.repeat_interleave(self.num_key_value_groups, dim=1)

    def _text_attention(self, q, k, v, mask):
        if self.fused_attn:
            return F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=mask is None and q.shape[2] > 1)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
        if mask is None and q.shape[2] > 1:
            mask = build_attention_mask(None, q.shape[2], k.shape[2],
                                        scores.dtype, scores.device, True)
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        return probs @ v

    def adapter_attention(self, q: torch.Tensor,
                          prompt: torch.Tensor) -> torch.Tensor:
        """Gated attention of the (rotated) queries over prompt tokens.

        Args:
            q (torch.Tensor): Rotated queries, (B, H, T, d).
            prompt (torch.Tensor): Prompt tokens, (B or 1, P, dim).

        Returns:
            torch.Tensor: (B, H, T, d), to be added to the text attention.
        """
        prompt = prompt.to(q.dtype)
        kp = self._repeat_kv(
            self._heads(
                self.k_proj(prompt, lora=False), self.num_key_value_heads))
        vp = self._repeat_kv(
            self._heads(
                self.v_proj(prompt, lora=False), self.num_key_value_heads))
        scores = q @ kp.transpose(2, 3) / math.sqrt(self.head_dim)
        gate = self._param('gate', self.gate)
        scores = gate.tanh().to(q.dtype) * F.softmax(
            scores.float(), dim=-1).type_as(q)
        if self.new_gate is not None:
            new_gate = self._param('new_gate', self.new_gate)
            scores = new_gate.to(q.dtype) * scores
        return scores @ vp

    def forward(self,
                hidden_states: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                past_key_value=None,
                output_attentions: bool = False,
                use_cache: bool = False,
                cache_position: Optional[torch.Tensor] = None,
                position_embeddings=None,
                adapter_prompt: Optional[torch.Tensor] = None,
                **kwargs):
        """Same signature and outputs as transformers' Llama attention, plus
        ``adapter_prompt`` (B or 1, P, dim) or None for a plain layer."""
        from transformers.models.llama.modeling_llama import \
            apply_rotary_pos_emb
        if position_embeddings is None:
            raise ValueError('AdapterLlamaAttention needs the rotary '
                             '`position_embeddings` (cos, sin) of the model')
        b, t, _ = hidden_states.shape
        q = self._heads(self.q_proj(hidden_states), self.num_heads)
        k = self._heads(self.k_proj(hidden_states), self.num_key_value_heads)
        v = self._heads(self.v_proj(hidden_states), self.num_key_value_heads)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_value is not None:
            k, v = past_key_value.update(
                k, v, self.layer_idx,
                dict(sin=sin, cos=cos, cache_position=cache_position))
        out = self._text_attention(q, self._repeat_kv(k), self._repeat_kv(v),
                                   attention_mask)
        if adapter_prompt is not None:
            out = out + self.adapter_attention(q, adapter_prompt)
        out = out.transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out), None, past_key_value


def inject_adapters(llama: nn.Module,
                    bias_mode: str = 'mm7b',
                    lora_rank: int = 0,
                    fused_attn: bool = True) -> nn.Module:
    """Turn a transformers ``LlamaForCausalLM`` into its adapter version.

    Every decoder layer's attention becomes :class:`AdapterLlamaAttention`,
    every MLP linear layer an :class:`AdapterLinear` and every RMSNorm
    (the final one too) an :class:`AdapterRMSNorm`, in place; the weights
    are shared.

    Args:
        llama (nn.Module): ``LlamaForCausalLM``.
        bias_mode (str): See :func:`linear_tuning`. Defaults to 'mm7b'.
        lora_rank (int): LoRA rank on all seven linear layers (0: none).
            Defaults to 0.
        fused_attn (bool): SDPA for the text attention. Defaults to True.

    Returns:
        nn.Module: ``llama`` itself.
    """
    if getattr(llama.config, 'pretraining_tp', 1) != 1:
        raise ValueError('pretraining_tp > 1 is not supported')
    for layer in llama.model.layers:
        layer.self_attn = AdapterLlamaAttention(
            layer.self_attn,
            bias_mode=bias_mode,
            lora_rank=lora_rank,
            fused_attn=fused_attn)
        for name in _MLP:
            bias, scale = linear_tuning(bias_mode, name)
            setattr(
                layer.mlp, name,
                AdapterLinear.from_linear(
                    getattr(layer.mlp, name),
                    bias=bias,
                    scale=scale,
                    lora_rank=lora_rank))
        for name in ('input_layernorm', 'post_attention_layernorm'):
            setattr(layer, name,
                    AdapterRMSNorm.from_norm(getattr(layer, name)))
    llama.model.norm = AdapterRMSNorm.from_norm(llama.model.norm)
    return llama


def build_attention_mask(pad_mask: Optional[torch.Tensor],
                         q_len: int,
                         kv_len: int,
                         dtype: torch.dtype,
                         device: torch.device,
                         force: bool = False) -> Optional[torch.Tensor]:
    """Additive causal (+ key padding) mask for the last ``q_len`` queries.

    Args:
        pad_mask (torch.Tensor, optional): (B, kv_len), 1 for real tokens,
            0 for (left) padding. None for no padding.
        q_len (int): Number of queries (the last ``q_len`` positions).
        kv_len (int): Number of keys (cache + new tokens).
        dtype (torch.dtype): Mask dtype.
        device (torch.device): Mask device.
        force (bool): Build a mask even when a plain causal mask over equal
            lengths would do (then None is returned). Defaults to False.

    Returns:
        torch.Tensor | None: (B or 1, 1, q_len, kv_len) with 0 where allowed
        and the dtype's minimum elsewhere. Rows with no allowed key (queries
        at padding positions) are left open to avoid NaNs; their outputs are
        never used.
    """
    if pad_mask is None and q_len == kv_len and not force:
        return None
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    allowed = (torch.arange(kv_len, device=device)[None] <= q_pos)[None, None]
    if pad_mask is not None:
        allowed = allowed & pad_mask.to(
            device=device, dtype=torch.bool)[:, None, None, :]
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def adapter_llama_forward(llama: nn.Module,
                          inputs_embeds: torch.Tensor,
                          prompts: Sequence[Optional[torch.Tensor]],
                          attention_mask: Optional[torch.Tensor] = None,
                          position_ids: Optional[torch.Tensor] = None,
                          past_key_values=None,
                          last_only: bool = False,
                          gradient_checkpointing: bool = False
                          ) -> torch.Tensor:
    """Run the adapter LLaMA and return logits.

    Args:
        llama (nn.Module): ``LlamaForCausalLM`` after :func:`inject_adapters`.
        inputs_embeds (torch.Tensor): (B, T, dim) token embeddings.
        prompts (Sequence[Tensor | None]): One prompt (B or 1, P, dim) or
            None per decoder layer.
        attention_mask (torch.Tensor, optional): (B, past + T) padding mask
            (1: token, 0: padding). None: no padding. Defaults to None.
        position_ids (torch.Tensor, optional): (B, T) positions. Defaults to
            ``past .. past + T - 1``.
        past_key_values (transformers ``Cache``, optional): KV cache, updated
            in place. Defaults to None.
        last_only (bool): Return the logits of the last position only.
            Defaults to False.
        gradient_checkpointing (bool): Recompute each layer in backward
            (non-reentrant, so the autograd graph is the one of the forward).
            Defaults to False.

    Returns:
        torch.Tensor: Logits (B, T or 1, vocab).
    """
    model = llama.model
    if len(prompts) != len(model.layers):
        raise ValueError(f'got {len(prompts)} prompts for '
                         f'{len(model.layers)} layers')
    b, t, _ = inputs_embeds.shape
    past = 0 if past_key_values is None else \
        past_key_values.get_seq_length()
    cache_position = torch.arange(past, past + t, device=inputs_embeds.device)
    if position_ids is None:
        position_ids = cache_position[None].expand(b, -1)
    mask = build_attention_mask(attention_mask, t, past + t,
                                inputs_embeds.dtype, inputs_embeds.device)
    position_embeddings = model.rotary_emb(inputs_embeds, position_ids)
    hidden = inputs_embeds
    for layer, prompt in zip(model.layers, prompts):
        kwargs = dict(
            attention_mask=mask,
            position_ids=position_ids,
            past_key_value=past_key_values,
            use_cache=past_key_values is not None,
            cache_position=cache_position,
            position_embeddings=position_embeddings,
            adapter_prompt=prompt)
        if gradient_checkpointing and torch.is_grad_enabled():
            hidden = checkpoint(
                layer, hidden, use_reentrant=False, **kwargs)[0]
        else:
            hidden = layer(hidden, **kwargs)[0]
    hidden = model.norm(hidden)
    if last_only:
        hidden = hidden[:, -1:]
    return llama.lm_head(hidden)


def layer_prompts(adapter_query: torch.Tensor,
                  visual: Optional[torch.Tensor],
                  num_layers: int,
                  query_layer: int,
                  query_len: int,
                  fusion: str = 'late') -> List[Optional[torch.Tensor]]:
    """Per-layer prompts
    (docs/llama_adapter_v2.md#language-model-with-adapters,
    docs/llama_adapter_v2.md#paper-and-released-code).

    Args:
        adapter_query (torch.Tensor): (query_layer * query_len, dim).
        visual (torch.Tensor, optional): Visual query V, (B, query_len, dim).
        num_layers (int): Number of decoder layers L.
        query_layer (int): Number of adapted (last) layers Lq.
        query_len (int): Prompt length per layer.
        fusion (str): ``'late'`` (released code): layer ``L-Lq+i`` gets
            ``A_i + V``; ``'early'`` (paper): layer 0 gets ``V`` and layer
            ``L-Lq+i`` gets ``A_i``. Defaults to 'late'.

    Returns:
        list: ``num_layers`` entries, a tensor or None.
    """
    prompts: List[Optional[torch.Tensor]] = [None] * num_layers
    adapter = adapter_query.view(query_layer, query_len, -1)
    start = num_layers - query_layer
    for i in range(query_layer):
        p = adapter[i][None]
        if fusion == 'late' and visual is not None:
            p = p + visual
        prompts[start + i] = p
    if fusion == 'early' and visual is not None:
        prompts[0] = visual
    return prompts

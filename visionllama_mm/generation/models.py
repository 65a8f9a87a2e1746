"""DiT-LLaMA and SiT-LLaMA: DiT / SiT with VisionLLaMA blocks.

VisionLLaMA (arXiv 2403.00522, ``spec-visionllama.md`` §6) replaces the
blocks of DiT (Peebles & Xie, arXiv 2212.09748) and SiT (Ma et al., arXiv
2401.08740) by LLaMA-style blocks: 2D RoPE in the attention, a bias-free
SwiGLU, and no added position embedding. Conditioning stays DiT's adaLN-Zero.

This file keeps DiT's ``models.py`` layout (embedding layers, core model,
sin-cos helpers, configs) so diffs against DiT / SiT stay readable. Parameter
names equal the official checkpoints (§7.3), except that the official,
*unused* ``pos_embed`` is not created: it is dropped on load and regenerated
by :meth:`DiTLLaMA.official_state_dict` for export.
"""
import math
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from visionllama_mm.layers import (FFN_TYPES, RoPEAttention, RotaryEmbedding2D,
                                   build_ffn, swiglu_hidden_dim)
from visionllama_mm.utils import (check_choice, check_image_input,
                                  check_positive_int)

__all__ = [
    'PatchEmbed', 'TimestepEmbedder', 'LabelEmbedder', 'LLaMABlock',
    'FinalLayer', 'DiTLLaMA', 'SiTLLaMA', 'get_2d_sincos_pos_embed',
    'DiTLLaMA_models', 'SiTLLaMA_models', 'build_generator'
]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` with (N, D) conditions."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


###############################################################################
# Embedding Layers for Timesteps and Class Labels                             #
###############################################################################


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to tokens (N, C, H, W) -> (N, T, D)."""

    def __init__(self, patch_size: int, in_channels: int,
                 hidden_size: int) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        check_positive_int('patch_size', patch_size)
        self.in_channels = in_channels
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(
            in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(x, self.in_channels, self.patch_size, name='x')
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


def check_conditions(x: Tensor, t: Any, y: Any) -> None:
    """Raise a TypeError / ValueError unless ``t`` is a (N, ) tensor and
    ``y`` a (N, ) integer tensor for the N inputs of ``x`` (shapes and
    dtypes only: compile friendly)."""
    n = x.shape[0]
    for name, value, kind in (('t', t, 'timesteps'), ('y', y, 'labels')):
        if not isinstance(value, Tensor):
            raise TypeError(f'{name} ({kind}) must be a tensor of shape '
                            f'({n},), got {type(value).__name__}')
        if value.dim() != 1 or value.shape[0] != n:
            raise ValueError(f'{name} ({kind}) must have shape ({n},) (one '
                             f'per input), got {tuple(value.shape)}')
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError('y (class labels) must be an integer tensor, got '
                        f'dtype {y.dtype}')


class TimestepEmbedder(nn.Module):
    """Embeds scalar (possibly fractional) timesteps into (N, D) vectors."""

    def __init__(self,
                 hidden_size: int,
                 frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: Tensor,
                           dim: int,
                           max_period: float = 10000.) -> Tensor:
        """Sinusoidal features ``[cos(t f_i), sin(t f_i)]`` (GLIDE / DiT).

        ``f_i = max_period ** (-i / half)`` for i < half = dim // 2; an odd
        ``dim`` gets one zero column.
        """
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) *
            torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]  # (N, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb  # (N, dim)

    def forward(self, t: Tensor) -> Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Embeds class labels; label dropout to a null class enables CFG."""

    def __init__(self, num_classes: int, hidden_size: int,
                 dropout_prob: float) -> None:
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding,
                                            hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self,
                   labels: Tensor,
                   force_drop_ids: Optional[Tensor] = None) -> Tensor:
        """Replace labels by the null class ``num_classes`` (CFG dropout)."""
        if force_drop_ids is None:
            drop_ids = torch.rand(
                labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes),
                           labels)

    def forward(self,
                labels: Tensor,
                train: bool,
                force_drop_ids: Optional[Tensor] = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)  # (N, D)


###############################################################################
# Core Model                                                                  #
###############################################################################


class LLaMABlock(nn.Module):
    """adaLN-Zero block with 2D-RoPE attention and a bias-free SwiGLU.

    ``ffn_type='mlp'`` gives DiT's block FFN instead: a GELU (tanh) MLP of
    width 4 D with biases (``mlp.fc1``, ``mlp.fc2``).
    """

    def __init__(self,
                 hidden_size: int,
                 num_heads: int,
                 ffn_type: str = 'swiglu') -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(
            hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = RoPEAttention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(
            hidden_size, elementwise_affine=False, eps=1e-6)
        if ffn_type == 'swiglu':
            # upstream LLaMAMLP: ceil256(floor(2 * 4D / 3)), the LLaMA rule
            self.mlp = build_ffn(
                'swiglu',
                hidden_size,
                swiglu_hidden_dim(hidden_size, 'llama'),
                bias=False)
        else:
            self.mlp = build_ffn(
                ffn_type,
                hidden_size,
                4 * hidden_size,
                bias=True,
                act='gelu_tanh')
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor, cos: Optional[Tensor],
                sin: Optional[Tensor]) -> Tensor:
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
         gate_mlp) = self.adaLN_modulation(c).chunk(
             6, dim=1)  # 6 x (N, D)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        rope = None if cos is None else (cos, sin)
        x = x + gate_msa.unsqueeze(1) * self.attn(h, rope=rope)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(h)
        return x  # (N, T, D)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and linear projection to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int,
                 out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(
            hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size,
                                patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = modulate(self.norm_final(x), shift, scale)
        return self.linear(x)  # (N, T, p * p * out_channels)


class DiTLLaMA(nn.Module):
    """Diffusion transformer with VisionLLaMA blocks (DiT-LLaMA).

    The network predicts the noise (and, with ``learn_sigma``, the
    interpolation values of the learned variance) for DiT's DDPM objective.

    Args:
        input_size (int): Side of the (latent) input the model is built for;
            only used to regenerate the official ``pos_embed`` on export.
            Inputs of any size divisible by ``patch_size`` are accepted (the
            RoPE grid follows the input). Defaults to 32.
        patch_size (int): Patch size p. Defaults to 2.
        in_channels (int): Input channels (4 for SD-VAE latents).
            Defaults to 4.
        hidden_size (int): Width D. Defaults to 1152.
        depth (int): Number of blocks. Defaults to 28.
        num_heads (int): Attention heads; D / heads must be a multiple of 4.
            Defaults to 16.
        class_dropout_prob (float): Label dropout for classifier-free
            guidance; > 0 adds the null-class row. Defaults to 0.1.
        num_classes (int): Number of classes. Defaults to 1000.
        learn_sigma (bool): Also output the variance channels (2x
            ``in_channels`` outputs). Defaults to True.
        cfg_channels (int, optional): Channels guided by
            :meth:`forward_with_cfg`:

            - ``3`` - official (DiT/SiT and the released models guide only
              the first three of the four latent channels, for exact
              reproducibility, spec §6.1 / §10 #13);
            - ``4`` (or ``None`` = all ``in_channels``) - standard guidance.

            Defaults to 3.
        rope_base (float): RoPE base. Defaults to 10000.
        add_pos_embed (bool): ⚠ DEVIATION, off in every official model.
            Also add DiT's fixed 2D sin-cos position embedding to the
            tokens (a non-persistent buffer, not in checkpoints). RoPE alone
            is relative: from pure noise the network cannot tell where a
            token lies in the frame, so small models trained briefly on
            centred data (the pixel-space MNIST quick start) scatter digit
            strokes over the grid. Defaults to False.
        ffn_type (str): ``'swiglu'`` (DiT-LLaMA) or ``'mlp'`` (DiT's GELU
            MLP, width 4 D). Defaults to ``'swiglu'``.
        use_rope (bool): Rotate queries and keys by 2D RoPE (DiT-LLaMA).
            Defaults to True.

            The original DiT / SiT network (the paper's baseline) is
            ``ffn_type='mlp', use_rope=False, add_pos_embed=True``: sin-cos
            absolute positions, GELU MLP, LayerNorm adaLN-Zero, the same
            parameter names as DiT's ``models.py`` except the position table
            (a buffer here).
        rope_cfg (dict, optional): Extra :class:`~visionllama_mm.layers.
            rope.RotaryEmbedding2D` options for the paper's position
            ablations: ``mode`` (``'2d'`` official, ``'1d'`` raster,
            ``'mixed'`` learnable RoPE-Mixed), ``ratio`` (partial RoPE),
            ``per_head`` (frequencies per head), ``ntk_alpha`` (NTK-aware
            base). None keeps the official 2D RoPE. Defaults to None.
        grad_checkpointing (bool): Recompute blocks in backward to save
            memory. Defaults to False.
    """

    def __init__(self,
                 input_size: int = 32,
                 patch_size: int = 2,
                 in_channels: int = 4,
                 hidden_size: int = 1152,
                 depth: int = 28,
                 num_heads: int = 16,
                 class_dropout_prob: float = 0.1,
                 num_classes: int = 1000,
                 learn_sigma: bool = True,
                 cfg_channels: Optional[int] = 3,
                 rope_base: float = 10000.,
                 add_pos_embed: bool = False,
                 ffn_type: str = 'swiglu',
                 use_rope: bool = True,
                 rope_cfg: Optional[dict] = None,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        if cfg_channels is None:
            cfg_channels = in_channels
        if not (isinstance(cfg_channels, int)
                and 1 <= cfg_channels <= in_channels):
            raise ValueError(
                f'cfg_channels must be None or an int in [1, in_channels='
                f'{in_channels}] (3: official, 4: standard for latents), got '
                f'{cfg_channels!r}')
        if hidden_size % num_heads:
            raise ValueError(f'hidden_size ({hidden_size}) must be divisible '
                             f'by num_heads ({num_heads})')
        self.input_size = input_size
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.num_classes = num_classes
        self.cfg_channels = cfg_channels
        self.grad_checkpointing = grad_checkpointing
        self.add_pos_embed = add_pos_embed
        check_choice('ffn_type', ffn_type, FFN_TYPES)
        self.ffn_type = ffn_type
        self.use_rope = bool(use_rope)
        self._pos_cache: Dict[tuple, Tensor] = {}

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size,
                                        class_dropout_prob)
        # No added position embedding: 2D RoPE on the token grid instead.
        self.rope = RotaryEmbedding2D(
            hidden_size // num_heads, rope_base,
            **dict(dict(num_heads=num_heads), **(rope_cfg or {})))
        self.blocks = nn.ModuleList([
            LLaMABlock(hidden_size, num_heads, ffn_type) for _ in range(depth)
        ])
        self.final_layer = FinalLayer(hidden_size, patch_size,
                                      self.out_channels)
        self.initialize_weights()
        self._register_load_state_dict_pre_hook(self._drop_pos_embed)

    def initialize_weights(self) -> None:
        """Official init: xavier linears, zero adaLN and output layers."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)

        # patch embedding initialised like nn.Linear (not nn.Conv2d)
        w = self.x_embedder.proj.weight
        with torch.no_grad():
            w.copy_(
                nn.init.xavier_uniform_(
                    torch.empty_like(w).flatten(1)).view_as(w))
        nn.init.constant_(self.x_embedder.proj.bias, 0)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: every block starts as the identity
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)

        # zero output layer: the initial prediction is 0
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Toggle activation checkpointing of the blocks."""
        self.grad_checkpointing = enable

    def unpatchify(self,
                   x: Tensor,
                   grid_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Tokens (N, T, p * p * C) to images (N, C, h * p, w * p).

        Args:
            x (Tensor): Output tokens; token (i, j) holds a (p, p, C) block.
            grid_size (tuple[int, int], optional): Token grid (h, w);
                defaults to a square grid.
        """
        c, p = self.out_channels, self.patch_size
        if grid_size is None:
            h = w = int(x.shape[1]**0.5)
        else:
            h, w = grid_size
        if h * w != x.shape[1]:
            raise ValueError(f'{x.shape[1]} tokens do not form a {h}x{w} '
                             f'grid')
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def pos_embed(self, grid: Tuple[int, int], ref: Tensor) -> Tensor:
        """Fixed sin-cos embedding (T, D) of an (h, w) grid (cached)."""
        key = (grid, ref.device, ref.dtype)
        if key not in self._pos_cache:
            pos = get_2d_sincos_pos_embed(self.hidden_size, grid)
            self._pos_cache[key] = pos.to(ref.device, ref.dtype)
        return self._pos_cache[key]

    def forward_features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Tokens after the final layer, (N, T, p * p * out_channels)."""
        check_image_input(x, self.in_channels, self.patch_size, name='x')
        check_conditions(x, t, y)
        p = self.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        x = self.x_embedder(x)  # (N, T, D), T = H * W / p ** 2
        if self.add_pos_embed:
            x = x + self.pos_embed(grid, x)
        t = self.t_embedder(t)  # (N, D)
        y = self.y_embedder(y, self.training)  # (N, D)
        c = t + y  # (N, D)
        cos = sin = None
        if self.use_rope:
            cos, sin = self.rope.grid(*grid, device=x.device)  # (T, D / h)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, c, cos, sin, use_reentrant=False)
            else:
                x = block(x, c, cos, sin)  # (N, T, D)
        return self.final_layer(x, c)  # (N, T, p ** 2 * out_channels)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """Predict from latents ``x`` (N, C, H, W) at timesteps ``t`` (N, ).

        Args:
            x (Tensor): Noisy inputs (N, in_channels, H, W).
            t (Tensor): Diffusion timesteps (N, ), integer or fractional.
            y (Tensor): Class labels (N, ); ``num_classes`` is the null
                class.

        Returns:
            Tensor: (N, out_channels, H, W).
        """
        out = self.forward_features(x, t, y)  # validates x, t and y
        p = self.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        return self.unpatchify(out, grid)  # (N, out_channels, H, W)

    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor,
                         cfg_scale: float) -> Tensor:
        """Batched conditional + unconditional forward for guidance.

        Official semantics: the batch is [conditional | unconditional]; the
        first half of ``x`` is used for both halves, and
        ``eps = eps_u + cfg_scale * (eps_c - eps_u)`` is applied to the
        first ``cfg_channels`` output channels only (the rest pass through).
        Both halves of the result carry the guided prediction.
        """
        half = x[:len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        k = self.cfg_channels
        eps, rest = model_out[:, :k], model_out[:, k:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)

    @staticmethod
    def _drop_pos_embed(state_dict, prefix, *args, **kwargs) -> None:
        # The official checkpoints carry a sin-cos ``pos_embed`` that the
        # LLaMA forward never adds (spec §6.1, §10 #10): drop it.
        state_dict.pop(prefix + 'pos_embed', None)

    def official_state_dict(self) -> Dict[str, Tensor]:
        """State dict in the official layout, with the unused ``pos_embed``.

        The ``pos_embed`` (1, T, D) is DiT's fixed 2D sin-cos embedding of the
        ``input_size / patch_size`` grid, as the official model stores it.
        """
        state = {k: v for k, v in self.state_dict().items()}
        grid = self.input_size // self.patch_size
        pos = get_2d_sincos_pos_embed(self.hidden_size, grid)
        state['pos_embed'] = pos.float().unsqueeze(0)
        return state


class SiTLLaMA(DiTLLaMA):
    """Scalable interpolant transformer with VisionLLaMA blocks (SiT-LLaMA).

    Same network as :class:`DiTLLaMA`; the forward returns only the first
    ``in_channels`` channels (the velocity) when ``learn_sigma`` is set, as
    the official SiT does.
    """

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        out = super().forward(x, t, y)  # (N, out_channels, H, W)
        if self.learn_sigma:
            out, _ = out.chunk(2, dim=1)
        return out  # (N, in_channels, H, W)


###############################################################################
# Sine/Cosine Positional Embedding Functions                                  #
###############################################################################


def get_1d_sincos_pos_embed(embed_dim: int, pos: Tensor) -> Tensor:
    """``[sin(pos w_i), cos(pos w_i)]``, ``w_i = 10000 ** (-2i / dim)``."""
    if embed_dim % 2:
        raise ValueError(f'embed_dim must be even, got {embed_dim}')
    omega = torch.arange(embed_dim // 2, dtype=torch.float64)
    omega = 1. / 10000**(omega / (embed_dim / 2.))  # (D/2, )
    out = pos.reshape(-1).double()[:, None] * omega[None]  # (M, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


def get_2d_sincos_pos_embed(embed_dim: int,
                            grid_size: Union[int, Tuple[int, int]]) -> Tensor:
    """DiT / MAE fixed 2D sin-cos embedding of a grid, (h * w, D).

    The first half of the channels encodes the column (x), the second half
    the row (y), as in the official ``get_2d_sincos_pos_embed``; tokens are
    in raster order. ``grid_size`` is G (a G x G grid) or (h, w).
    """
    if embed_dim % 4:
        raise ValueError(f'embed_dim must be a multiple of 4, got '
                         f'{embed_dim}')
    h, w = (grid_size, grid_size) if isinstance(grid_size, int) \
        else grid_size
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64),
        torch.arange(w, dtype=torch.float64),
        indexing='ij')
    emb_x = get_1d_sincos_pos_embed(embed_dim // 2, xs)
    emb_y = get_1d_sincos_pos_embed(embed_dim // 2, ys)
    return torch.cat([emb_x, emb_y], dim=1)  # (G * G, D)


###############################################################################
# Configs                                                                     #
###############################################################################

# (depth, hidden_size, patch_size, num_heads) of each size, as in DiT's and
# SiT's model tables.
_DIT_SIZES = {
    'B_4': (12, 768, 4, 12),
    'L_4': (24, 1024, 4, 16),
    'XL_4': (28, 1152, 4, 16),
    'XL_2': (28, 1152, 2, 16),
}
_SIT_SIZES = {
    'S_2': (12, 384, 2, 6),
    'B_2': (12, 768, 2, 12),
    'L_2': (24, 1024, 2, 16),
    'XL_2': (28, 1152, 2, 16),
}


def _model_table(net_class: type, prefix: str, dashed: str,
                 sizes: Dict[str, tuple]) -> Dict[str, Callable]:
    """Builders keyed by the upstream ``--model`` names (``DiTLLaMA_XL_2``)
    and their DiT-style aliases (``DiT-LLaMA-XL/2``)."""
    table = {}
    for size, (depth, hidden_size, patch_size, num_heads) in sizes.items():
        builder = partial(
            net_class,
            depth=depth,
            hidden_size=hidden_size,
            patch_size=patch_size,
            num_heads=num_heads)
        table[f'{prefix}_{size}'] = builder
        table[f'{dashed}-{size.replace("_", "/")}'] = builder
    return table


# Names as the upstream ``--model`` choices, plus DiT-style aliases.
DiTLLaMA_models: Dict[str, Callable[..., DiTLLaMA]] = _model_table(
    DiTLLaMA, 'DiTLLaMA', 'DiT-LLaMA', _DIT_SIZES)
SiTLLaMA_models: Dict[str, Callable[..., SiTLLaMA]] = _model_table(
    SiTLLaMA, 'SiTLLaMA', 'SiT-LLaMA', _SIT_SIZES)


def build_generator(name: str, **kwargs) -> Union[DiTLLaMA, SiTLLaMA]:
    """Build a network from :data:`DiTLLaMA_models` / :data:`SiTLLaMA_models`.

    Args:
        name (str): Model name, e.g. ``'DiTLLaMA_XL_2'`` or
            ``'SiT-LLaMA-B/2'``.
        **kwargs: Constructor overrides (e.g. ``input_size``,
            ``num_classes``, ``cfg_channels``).
    """
    table = {**DiTLLaMA_models, **SiTLLaMA_models}
    check_choice('model name', name, sorted(table))
    return table[name](**kwargs)

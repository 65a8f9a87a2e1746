"""2D rotary position embedding (2D RoPE) and its auto-scaled form (AS2DRoPE).

VisionLLaMA (arXiv 2403.00522, §3 and docs/visionllama.md#2d-rope) rotates the
query and key of every head by angles that depend on the token's continuous
coordinates (x, y), x the column and y the row. Inside a head of dimension
``d`` the adjacent channel pairs j = 0 .. d/2 - 1 rotate by::

    phi_j = (x if j is even else y) * theta_{j // 2},
    theta_m = base ** (-4 m / d),

i.e. the per-pair angle sequence is ``[x t0, y t0, x t1, y t1, ...]`` and each
pair (a, b) becomes (a cos phi - b sin phi, a sin phi + b cos phi) (the
adjacent-pair Meta-LLaMA convention, not the rotate-half one).

This is the package's one RoPE implementation. Every model asks
:class:`RotaryEmbedding2D` for its (cos, sin) tables through small coordinate
generators:

* :func:`grid_coords` - full H x W grid (plain models, DiT/SiT, LSA and ViTDet
  windows with the window size as grid, ViTDet global blocks), optionally
  strided / offset;
* :func:`gsa_key_coords` - GSA sub-sampled keys, ``'official'`` or
  ``'centroid'`` placement (docs/pyramid.md#gsa-key-positions);
* :func:`cls_token_coords` - the official class-token position (W - 1, -1);
* :func:`gather_tables` - per-sample gather of kept tokens (MAE,
  docs/visionllama.md#mae-encoder);
* :func:`anchor_scale` - AS2DRoPE coordinate scaling
  (docs/visionllama.md#as2drope).

The variants the paper compares (Tables 11 / 12) are options of the
frequency and coordinate generation only (the rotation and the cache are
shared); the defaults are the official 2D RoPE:

* ``mode='1d'`` - 1D RoPE over the raster index ``n = y * W + x``
  (:func:`raster_coords`) with the text-LLaMA frequencies
  ``base ** (-2 j / d)`` on all d / 2 pairs (:func:`raster_frequencies`);
* ``mode='mixed'`` - learnable mixed-frequency 2D RoPE (RoPE-Mixed of
  Heo et al., arXiv 2403.13298, timm's ``RotaryEmbeddingMixed``): pair j of
  head h rotates by ``x fx[h, j] + y fy[h, j]`` with learned ``fx, fy``
  (:func:`mixed_frequencies` gives RoPE-Mixed's initialisation);
* ``ratio`` - partial RoPE: only the first ``ratio * d`` channels rotate
  (frequencies of the others are 0);
* ``base`` - the frequency base;
* ``per_head`` - one frequency set per head instead of one shared by all
  heads (:func:`axis_frequencies`);
* ``ntk_alpha`` - NTK-aware scaling of the base (:func:`ntk_base`).

The rotation is real-valued, ``x * cos + swap_pairs(x) * sin`` with a
sign-folded ``sin`` table (no complex dtypes, so it exports to ONNX, compiles
without graph breaks and autocasts); the angles are computed in fp32 with
autocast disabled, the rotation in fp32 (fp64 inputs stay fp64), and
everything is out of place. :class:`RotaryEmbedding2D` keeps a small,
bounded LRU cache of tables in eager mode.
"""
import contextlib
import math
from collections import OrderedDict
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from visionllama_mm.utils import check_choice

__all__ = [
    'rope_frequencies', 'grid_coords', 'gsa_key_coords', 'cls_token_coords',
    'anchor_scale', 'coords_to_angles', 'angles_to_cos_sin', 'gather_tables',
    'apply_rope', 'RotaryEmbedding2D', 'ROPE_MODES', 'rotary_channels',
    'ntk_base', 'axis_frequencies', 'raster_frequencies', 'raster_coords',
    'mixed_frequencies', 'mixed_angles'
]

GSA_KEY_POS = ('official', 'centroid')
ANCHOR_MODES = ('height', 'per_axis')
ROPE_MODES = ('2d', '1d', 'mixed')

Tables = Tuple[Tensor, Tensor]


def rope_frequencies(head_dim: int,
                     base: float = 10000.,
                     device: Optional[torch.device] = None) -> Tensor:
    """Frequencies ``theta_m = base ** (-4 m / head_dim)``, m < head_dim / 4.

    Args:
        head_dim (int): Channels per head; must be a positive multiple of 4
            (two axes, and a (cos, sin) pair per angle).
        base (float): RoPE base. Defaults to 10000.
        device (torch.device, optional): Device of the result.

    Returns:
        Tensor: fp32 tensor of shape (head_dim // 4, ).
    """
    if head_dim <= 0 or head_dim % 4 != 0:
        raise ValueError('2D RoPE needs head_dim to be a positive multiple '
                         f'of 4, got head_dim={head_dim}')
    m = torch.arange(head_dim // 4, dtype=torch.float32, device=device)
    return base**(-4. * m / head_dim)


def grid_coords(height: int,
                width: int,
                step: float = 1.,
                offset: float = 0.,
                device: Optional[torch.device] = None) -> Tensor:
    """Coordinates of the tokens of an H x W grid in raster order.

    Token n gets ``x = offset + step * (n mod W)`` and
    ``y = offset + step * (n div W)``.

    Args:
        height (int): Grid height H (rows).
        width (int): Grid width W (columns).
        step (float): Distance between neighbouring tokens. Defaults to 1.
        offset (float): Coordinate of the first token. Defaults to 0.
        device (torch.device, optional): Device of the result.

    Returns:
        Tensor: fp32 (H * W, 2) tensor of (x, y).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f'grid size must be positive, got height={height}, '
                         f'width={width}')
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing='ij')
    coords = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
    return coords * step + offset


def gsa_key_coords(height: int,
                   width: int,
                   sr_ratio: int,
                   mode: str = 'official',
                   device: Optional[torch.device] = None) -> Tensor:
    """Coordinates of the sub-sampled GSA keys
    (docs/pyramid.md#gsa-key-positions).

    The keys of a GSA layer summarise s x s groups of the H x W query grid
    (s = ``sr_ratio``) on a reduced grid H' x W' = (H // s, W // s). Key j is
    placed at:

    * ``'official'`` - the released code: ``x = (j mod W) s + (1 - 1/s)``,
      ``y = (j div W) s + (1 - 1/s)``. It uses the *full-resolution* width W
      and an offset that is not the group centre; the released pyramid
      checkpoints were trained with it.
    * ``'centroid'`` - the paper's average of the summarised positions:
      ``x = (j mod W') s + (s - 1)/2``, ``y = (j div W') s + (s - 1)/2``.

    Args:
        height (int): Query grid height H.
        width (int): Query grid width W.
        sr_ratio (int): Sub-sampling ratio s.
        mode (str): ``'official'`` or ``'centroid'``. Defaults to
            ``'official'``.
        device (torch.device, optional): Device of the result.

    Returns:
        Tensor: fp32 (H' * W', 2) tensor of (x, y).
    """
    check_choice('gsa_key_pos', mode, GSA_KEY_POS)
    s = int(sr_ratio)
    if s < 1:
        raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
    h_r, w_r = height // s, width // s
    if h_r < 1 or w_r < 1:
        raise ValueError(f'a {height}x{width} grid is smaller than the GSA '
                         f'sub-sampling ratio {s}')
    j = torch.arange(h_r * w_r, dtype=torch.float32, device=device)
    if mode == 'official':
        row_len, offset = float(width), 1. - 1. / s
    else:
        row_len, offset = float(w_r), (s - 1) / 2.
    x = torch.remainder(j, row_len) * s + offset
    y = torch.div(j, row_len, rounding_mode='floor') * s + offset
    return torch.stack([x, y], dim=-1)


def cls_token_coords(width: int,
                     position: Union[str, float] = 'official',
                     device: Optional[torch.device] = None) -> Tensor:
    """Coordinates of a class token that is rotated like a patch token.

    Args:
        width (int): Grid width W.
        position (str | float): ``'official'`` places the token at flat
            index -1 of the grid, i.e. ``(x, y) = (W - 1, -1)`` (floor
            semantics, as the deit-style upstream models on torch >= 1.13);
            a number c places it at (c, c). Defaults to ``'official'``.
        device (torch.device, optional): Device of the result.

    Returns:
        Tensor: fp32 (1, 2) tensor.
    """
    if position == 'official':
        xy = [float(width - 1), -1.]
    elif isinstance(position, (int, float)) and not isinstance(position, bool):
        xy = [float(position), float(position)]
    else:
        raise ValueError("cls_rope_pos must be 'official', None or a number, "
                         f'got {position!r}')
    return torch.tensor([xy], dtype=torch.float32, device=device)


def anchor_scale(height: int,
                 width: int,
                 anchor: Optional[float],
                 mode: str = 'height') -> Tuple[float, float]:
    """AS2DRoPE scale factors (s_x, s_y) for a grid
    (docs/visionllama.md#as2drope).

    Args:
        height (int): Grid height H in tokens.
        width (int): Grid width W in tokens.
        anchor (float, optional): Anchor grid size B; ``None`` disables the
            scaling (factors 1).
        mode (str): ``'height'`` - the official isotropic ``s = B / H`` for
            both axes; ``'per_axis'`` - ``B / W`` for x and ``B / H`` for y.
            Defaults to ``'height'``.

    Returns:
        tuple[float, float]: (s_x, s_y).
    """
    check_choice('anchor_mode', mode, ANCHOR_MODES)
    if anchor is None:
        return 1., 1.
    if mode == 'height':
        s = float(anchor) / height
        return s, s
    return float(anchor) / width, float(anchor) / height


def rotary_channels(head_dim: int, ratio: float = 1.) -> int:
    """Channels that rotate under partial RoPE: ``ratio * head_dim``.

    Raises a ValueError unless the result is a positive multiple of 4 (two
    axes, a (cos, sin) pair per angle).
    """
    if not 0. < float(ratio) <= 1.:
        raise ValueError(f'rope ratio must be in (0, 1], got {ratio!r}')
    rotated = int(round(head_dim * float(ratio)))
    if rotated <= 0 or rotated % 4 or abs(rotated - head_dim * ratio) > 1e-6:
        raise ValueError(
            f'rope ratio={ratio} rotates {head_dim * ratio:g} of '
            f'head_dim={head_dim} channels; it must be a positive multiple '
            'of 4')
    return rotated


def ntk_base(base: float, alpha: float, channels: int) -> float:
    """NTK-aware base ``base * alpha ** (k / (k - 2))`` for k channels.

    Stretches the low frequencies by about ``alpha`` while keeping the
    highest one (bloc97's NTK-aware interpolation, the paper's Table 12).
    ``k`` is the number of channels one coordinate rotates: d / 2 per axis
    in 2D RoPE, d in 1D RoPE.
    """
    if alpha <= 0:
        raise ValueError(f'ntk_alpha must be > 0, got {alpha!r}')
    if alpha == 1 or channels <= 2:
        return float(base)
    return float(base) * float(alpha)**(channels / (channels - 2))


def _pad_pairs(freqs: Tensor, pad: int) -> Tensor:
    """``pad`` zero frequencies for the non-rotated tail (partial RoPE).

    ``pad`` is a Python int (from the constructor's sizes), so tracing sees
    no data-dependent branch.
    """
    if pad == 0:
        return freqs
    return torch.cat([freqs, freqs.new_zeros(*freqs.shape[:-1], pad)], -1)


def axis_frequencies(head_dim: int,
                     base: float = 10000.,
                     ratio: float = 1.,
                     num_heads: int = 1,
                     device: Optional[torch.device] = None) -> Tensor:
    """2D RoPE frequencies with partial rotation and per-head sets.

    With r = ``ratio * head_dim`` rotated channels, head h (of
    ``num_heads``) gets ``theta_m = base ** (-4 (m + h / num_heads) / r)``
    for m < r / 4 and 0 for the remaining pairs. ``num_heads=1`` and
    ``ratio=1`` give :func:`rope_frequencies` (the official shared set);
    more heads interleave their sets over the same frequency range (the
    "different PE per head" ablation).

    Returns:
        Tensor: fp32 (num_heads, head_dim // 4).
    """
    rope_frequencies(head_dim)  # validates head_dim
    rotated = rotary_channels(head_dim, ratio)
    m = torch.arange(rotated // 4, dtype=torch.float32, device=device)
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    shift = (m[None] + h[:, None] / num_heads)  # (heads, r / 4)
    return _pad_pairs(base**(-4. * shift / rotated), (head_dim - rotated) // 4)


def raster_frequencies(head_dim: int,
                       base: float = 10000.,
                       ratio: float = 1.,
                       num_heads: int = 1,
                       device: Optional[torch.device] = None) -> Tensor:
    """1D RoPE frequencies ``base ** (-2 (j + h / num_heads) / r)``.

    One frequency per channel pair, j < r / 2 (r = ``ratio * head_dim``),
    0 for the non-rotated pairs, as text LLaMA.

    Returns:
        Tensor: fp32 (num_heads, head_dim // 2).
    """
    rope_frequencies(head_dim)
    rotated = rotary_channels(head_dim, ratio)
    j = torch.arange(rotated // 2, dtype=torch.float32, device=device)
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    shift = j[None] + h[:, None] / num_heads
    return _pad_pairs(base**(-2. * shift / rotated), (head_dim - rotated) // 2)


def raster_coords(coords: Tensor, row_len: float) -> Tensor:
    """(x, y) -> (n, 0) with the raster index ``n = y * row_len + x``.

    ``row_len`` is the grid width W in units of the x step per unit of y
    (W for integer or uniformly strided / scaled positions, ``W s_x / s_y``
    with per-axis AS2DRoPE factors), so the tokens of an H x W grid get
    n = 0 .. H W - 1 (times the step or scale) and the official class token
    (W - 1, -1) gets n = -1.
    """
    n = coords[..., 1] * row_len + coords[..., 0]
    return torch.stack([n, torch.zeros_like(n)], dim=-1)


def mixed_frequencies(head_dim: int,
                      num_heads: int = 1,
                      base: float = 10.,
                      ratio: float = 1.,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """RoPE-Mixed initialisation of learnable (fx, fy), (2, heads, d / 2).

    As RoPE-ViT's ``init_random_2d_freqs``: magnitudes
    ``base ** (-4 m / r)``, m < r / 4, each head at a random direction a:
    the first r / 4 pairs point along a, the next r / 4 along a + pi / 2
    (fx = mag cos, fy = mag sin); non-rotated pairs are 0. RoPE-ViT uses
    base 10 for this variant.
    """
    rope_frequencies(head_dim)
    rotated = rotary_channels(head_dim, ratio)
    m = torch.arange(rotated // 4, dtype=torch.float32)
    mag = base**(-4. * m / rotated)  # (r / 4, )
    a = torch.rand(num_heads, 1, generator=generator) * 2 * math.pi
    fx = torch.cat([mag * torch.cos(a), mag * torch.cos(a + math.pi / 2)], -1)
    fy = torch.cat([mag * torch.sin(a), mag * torch.sin(a + math.pi / 2)], -1)
    freqs = torch.stack([fx, fy])  # (2, heads, r / 2)
    return _pad_pairs(freqs, (head_dim - rotated) // 2)


def mixed_angles(coords: Tensor, freqs: Tensor) -> Tensor:
    """Pair angles ``x fx[h, j] + y fy[h, j]`` of RoPE-Mixed.

    Args:
        coords (Tensor): (N, 2) coordinates (x, y).
        freqs (Tensor): (2, heads, P) frequencies (fx, fy).

    Returns:
        Tensor: fp32 (heads, N, P) angles.
    """
    c = coords.float()
    f = freqs.float()
    return (c[None, :, 0, None] * f[0][:, None] +
            c[None, :, 1, None] * f[1][:, None])


def coords_to_angles(coords: Tensor, freqs: Tensor) -> Tensor:
    """Per-pair angles ``[x t0, y t0, x t1, y t1, ...]``.

    Args:
        coords (Tensor): (..., 2) coordinates (x, y).
        freqs (Tensor): (P, ) frequencies.

    Returns:
        Tensor: (..., 2P) fp32 angles, one per adjacent channel pair.
    """
    angles = coords.float()[..., None, :] * freqs.float()[:, None]  # (.,P,2)
    return angles.reshape(angles.shape[:-2] + (-1, ))


def angles_to_cos_sin(angles: Tensor) -> Tables:
    """Expand pair angles to the per-channel tables :func:`apply_rope` uses.

    Every angle phi_j is repeated for its two channels (2j, 2j + 1). The
    ``sin`` table carries the sign of the rotation: it holds
    ``(-sin phi_j, sin phi_j)`` on the pair, so that the rotation is
    ``x * cos + swap_pairs(x) * sin`` (see :func:`apply_rope`).

    Args:
        angles (Tensor): (..., d / 2) pair angles.

    Returns:
        tuple[Tensor, Tensor]: (..., d) ``cos`` and sign-folded ``sin``.
    """
    cos, sin = angles.cos(), angles.sin()
    # stack + reshape: repeat_interleave does not export to ONNX with a
    # dynamic size
    shape = angles.shape[:-1] + (-1, )
    return (torch.stack([cos, cos], dim=-1).reshape(shape),
            torch.stack([-sin, sin], dim=-1).reshape(shape))


def apply_rope(x: Tensor,
               cos: Tensor,
               sin: Tensor,
               num_prefix_tokens: int = 0) -> Tensor:
    """Rotate ``x`` by the tables, out of place, in fp32 (or fp64).

    Each channel pair (a, b) becomes ``(a cos - b sin, b cos + a sin)``,
    computed in real arithmetic as ``x * cos + swap_pairs(x) * sin`` with
    ``swap_pairs(a, b) = (b, a)`` and the sign-folded ``sin`` table of
    :func:`angles_to_cos_sin`.

    Args:
        x (Tensor): (..., N, d) queries or keys, e.g. (B, heads, N, d) or
            q and k stacked as (2, B, heads, N, d).
        cos (Tensor): (N', d) table shared by the batch, or (B, N', d) per
            sample, every angle repeated for its pair of channels (as
            :func:`angles_to_cos_sin` makes them). N' = N -
            ``num_prefix_tokens``.
        sin (Tensor): Sign-folded table, same shape as ``cos``.
        num_prefix_tokens (int): Leading tokens left unrotated (e.g. a class
            token that is not rotated). Defaults to 0.

    Returns:
        Tensor: Rotated tensor with the dtype of ``x``.
    """
    if cos.dim() == 3:  # per-sample table, broadcast over heads
        cos, sin = cos[:, None], sin[:, None]
    prefix = None
    if num_prefix_tokens:
        prefix, x = (x[..., :num_prefix_tokens, :], x[...,
                                                      num_prefix_tokens:, :])
    if x.shape[-2] != cos.shape[-2] or x.shape[-1] != cos.shape[-1]:
        raise ValueError(
            f'RoPE table of {tuple(cos.shape[-2:])} (tokens, channels) does '
            f'not match the {tuple(x.shape[-2:])} tokens to rotate')
    # fp32 at least (fp16/bf16 inputs are upcast, fp64 stays fp64)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    # The sign lives in the table, so the per-call work is one swapped copy
    # of x and a fused multiply-add. Of the real forms measured (pairwise
    # (a c - b s, b c + a s) with a stack, cat / roll swaps, a 2 x 2
    # matmul) this one is the fastest in eager forward + backward; compiled,
    # every form fuses into one kernel.
    # (reshape rather than unflatten / flatten: the legacy ONNX exporter
    # gets unflatten with a negative dim wrong)
    swapped = xf.reshape(xf.shape[:-1] + (-1, 2)).flip(-1).reshape(xf.shape)
    out = torch.addcmul(xf * cos, swapped, sin).to(x.dtype)
    if prefix is not None:
        out = torch.cat([prefix, out], dim=-2)
    return out


def gather_tables(cos: Tensor, sin: Tensor, ids_keep: Tensor) -> Tables:
    """Per-sample tables of the kept tokens (MAE random masking,
    docs/visionllama.md#mae-encoder).

    Args:
        cos (Tensor): (N, d) full-grid table.
        sin (Tensor): (N, d) full-grid table.
        ids_keep (Tensor): (B, K) indices of the kept tokens in the grid.

    Returns:
        tuple[Tensor, Tensor]: (B, K, d) tables.
    """
    if cos.dim() == 4:  # per-head (1, heads, N, d) -> (B, heads, K, d)
        return (cos[0][:, ids_keep].transpose(0, 1),
                sin[0][:, ids_keep].transpose(0, 1))
    return cos[ids_keep], sin[ids_keep]


class RotaryEmbedding2D(nn.Module):
    """2D RoPE / AS2DRoPE tables for one head dimension, with a small cache.

    Tables are computed in fp32 with autocast disabled. In eager mode the
    most recently used ones are kept in a least-recently-used cache of at
    most ``cache_size`` entries, keyed by the coordinate specification
    (kind, H, W, step, offset, scale, ...) and the device; a new input size
    evicts the oldest entry, so the memory held stays bounded however many
    input sizes a run sees (multi-scale detection feeds hundreds). Entries
    are built outside inference mode, so evaluation under
    ``torch.inference_mode()`` and training share them. Under
    ``torch.compile`` / ``torch.export`` and ``torch.jit.trace`` (and so
    ONNX export) the cache is bypassed and the tables are computed in the
    graph, so tracing never depends on what an earlier call cached. The
    cache is plain module state: never saved in the ``state_dict`` and
    cleared by ``.to()`` / ``.half()`` / ``.cuda()``, so a table is never
    stale.

    Args:
        head_dim (int): Channels per attention head (multiple of 4).
        base (float): RoPE base. Defaults to 10000.
        anchor (float | Sequence[float], optional): AS2DRoPE anchor B for
            :meth:`scale_for`; ``None`` disables auto-scaling. Defaults to
            None.
        anchor_mode (str): ``'height'`` (official, isotropic B / H) or
            ``'per_axis'``. Defaults to ``'height'``.
        cache_size (int): Most (cos, sin) entries kept; 0 disables the
            cache. Building a table costs well under 1% of a forward, so a
            few entries (the current input size's tables) are enough.
            Defaults to 8.
        mode (str): Position scheme (the paper's Tables 11 / 12):

            - ``'2d'``: official 2D RoPE (AS2DRoPE with an anchor);
            - ``'1d'``: 1D RoPE over the raster index ``y * W + x``;
            - ``'mixed'``: learnable mixed-frequency 2D RoPE (RoPE-Mixed;
              the learned ``freqs`` parameter (2, heads, head_dim / 2) is
              shared by every block that uses this module, RoPE-ViT learns
              one per block). Its tables depend on parameters, so they are
              recomputed every call (never cached).

            Defaults to ``'2d'``.
        ratio (float): Partial RoPE: the fraction of each head's channels
            that rotate (the first ``ratio * head_dim``; a multiple of 4).
            Defaults to 1.
        per_head (bool, optional): One frequency set per head
            (:func:`axis_frequencies`; tables become (1, heads, N, d)) or
            one shared by all heads (official). None: False, except True
            for ``'mixed'`` (RoPE-Mixed). Defaults to None.
        num_heads (int): Heads (for ``per_head`` and ``'mixed'``).
            Defaults to 1.
        ntk_alpha (float): NTK-aware scaling of ``base``
            (:func:`ntk_base`); 1 leaves it. Not for ``'mixed'``. Defaults
            to 1.
    """

    def __init__(self,
                 head_dim: int,
                 base: float = 10000.,
                 anchor: Optional[float] = None,
                 anchor_mode: str = 'height',
                 cache_size: int = 8,
                 mode: str = '2d',
                 ratio: float = 1.,
                 per_head: Optional[bool] = None,
                 num_heads: int = 1,
                 ntk_alpha: float = 1.) -> None:
        super().__init__()
        rope_frequencies(head_dim)  # validates head_dim
        check_choice('anchor_mode', anchor_mode, ANCHOR_MODES)
        check_choice('mode', mode, ROPE_MODES)
        rotated = rotary_channels(head_dim, ratio)
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f'num_heads must be an int >= 1, got '
                             f'{num_heads!r}')
        if mode == 'mixed' and ntk_alpha != 1:
            raise ValueError("ntk_alpha does not apply to mode='mixed' "
                             f'(learned frequencies), got {ntk_alpha!r}')
        self.mode = mode
        self.ratio = float(ratio)
        self.per_head = (mode
                         == 'mixed') if per_head is None else bool(per_head)
        self.num_heads = num_heads
        self.ntk_alpha = float(ntk_alpha)
        channels = rotated // 2 if mode == '2d' else rotated
        self.effective_base = ntk_base(base, self.ntk_alpha, channels)
        self.learnable = mode == 'mixed'
        if self.learnable:
            self.freqs = nn.Parameter(
                mixed_frequencies(head_dim, num_heads if self.per_head else 1,
                                  base, ratio))
        if not isinstance(cache_size, int) or isinstance(
                cache_size, bool) or cache_size < 0:
            raise ValueError('cache_size must be an int >= 0, got '
                             f'{cache_size!r}')
        self.head_dim = head_dim
        self.base = base
        self.anchor = anchor
        self.anchor_mode = anchor_mode
        self.cache_size = cache_size
        self._cache: 'OrderedDict[tuple, Tables]' = OrderedDict()

    def extra_repr(self) -> str:
        return (f'head_dim={self.head_dim}, base={self.base}, '
                f'anchor={self.anchor}, anchor_mode={self.anchor_mode!r}, '
                f'mode={self.mode!r}, ratio={self.ratio}, '
                f'per_head={self.per_head}, ntk_alpha={self.ntk_alpha}')

    def _apply(self, fn, *args, **kwargs):
        # Device / dtype moves drop every cached table (never stale).
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def scale_for(self, height: int, width: int) -> Tuple[float, float]:
        """AS2DRoPE factors of this module's anchor for an H x W grid."""
        return anchor_scale(height, width, self.anchor, self.anchor_mode)

    def angles(self, coords: Tensor) -> Tensor:
        """Pair angles of ``coords`` under this module's variant.

        Args:
            coords (Tensor): (..., 2) coordinates; (N, 2) for per-head sets.
                In ``'1d'`` mode, raster coordinates (n, 0)
                (:func:`raster_coords`).

        Returns:
            Tensor: fp32 (..., head_dim / 2) angles, or (heads, N,
            head_dim / 2) with per-head frequencies.
        """
        heads = self.num_heads if self.per_head else 1
        device = coords.device
        if self.mode == 'mixed':
            out = mixed_angles(coords, self.freqs)
            return out[0] if out.shape[0] == 1 else out
        if self.mode == '1d':
            freqs = raster_frequencies(self.head_dim, self.effective_base,
                                       self.ratio, heads, device)
            out = coords.float()[..., 0, None] * freqs[:, None]  # (h, N, P)
            return out[0] if heads == 1 else out
        freqs = axis_frequencies(self.head_dim, self.effective_base,
                                 self.ratio, heads, device)
        if heads == 1:
            return coords_to_angles(coords, freqs[0])
        out = coords.float()[None, :, None, :] * freqs[:, None, :, None]
        return out.flatten(-2)  # (heads, N, head_dim / 2)

    def tables(self, coords: Tensor) -> Tables:
        """Uncached (cos, sin) tables for coords.

        Returns:
            tuple[Tensor, Tensor]: (..., head_dim) tables shared by the
            heads, or (1, heads, N, head_dim) per-head tables (which
            :func:`apply_rope` broadcasts over the batch).
        """
        with (torch.autocast(coords.device.type, enabled=False)
              if torch.amp.is_autocast_available(coords.device.type) else
              contextlib.nullcontext()):  # meta: nothing to cast
            angles = self.angles(coords)
            cos, sin = angles_to_cos_sin(angles)
            if self.per_head and angles.dim() == 3:
                cos, sin = cos[None], sin[None]
            return cos, sin

    def cache_nbytes(self) -> int:
        """Bytes held by the cached tables."""
        return sum(t.numel() * t.element_size()
                   for entry in self._cache.values() for t in entry)

    def _cached(self, key: tuple, device, build) -> Tables:
        """Tables of ``build()`` coordinates, through the LRU cache."""
        if (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or self.cache_size == 0 or self.learnable):
            return self.tables(build())
        key = key + (str(torch.device(device or 'cpu')), )
        out = self._cache.get(key)
        if out is not None:
            self._cache.move_to_end(key)
            return out
        # built as normal tensors even under inference_mode, so training
        # after an inference-mode evaluation can use them in autograd
        with torch.inference_mode(False):
            out = self.tables(build())
        self._cache[key] = out
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def grid(self,
             height: int,
             width: int,
             device: Optional[torch.device] = None,
             step: float = 1.,
             offset: float = 0.,
             scale: Optional[Tuple[float, float]] = None,
             cls_pos: Union[None, str, float] = None) -> Tables:
        """Tables of an H x W raster grid, optionally with a class token.

        Args:
            height (int): Grid height H.
            width (int): Grid width W.
            device (torch.device, optional): Device of the tables.
            step (float): Token spacing. Defaults to 1.
            offset (float): First coordinate. Defaults to 0.
            scale (tuple[float, float], optional): (s_x, s_y) coordinate
                scale; ``None`` uses :meth:`scale_for` (1 without anchor).
            cls_pos (str | float, optional): If given, a rotated class token
                is prepended at :func:`cls_token_coords`; ``'official'``
                (W - 1, -1) is scaled with the grid, a number c stays at
                (c, c) (the upstream ``cls_pos`` is set after scaling).

        Returns:
            tuple[Tensor, Tensor]: (N, head_dim) fp32 cos and sin, N = H * W
            (+ 1 with ``cls_pos``).
        """
        if scale is None:
            scale = self.scale_for(height, width)
        sx, sy = float(scale[0]), float(scale[1])

        def build():
            scale_xy = torch.tensor([sx, sy], device=device)
            coords = grid_coords(height, width, step, offset, device)
            coords = coords * scale_xy
            if cls_pos is not None:
                cls = cls_token_coords(width, cls_pos, device)
                if cls_pos == 'official':
                    # flat index -1 is scaled like the grid; an explicit
                    # position c is set after scaling (upstream cls_pos)
                    cls = cls * scale_xy
                coords = torch.cat([cls, coords])
            if self.mode == '1d':
                # n = s (y W + x): y is already scaled (by s_y)
                coords = raster_coords(coords, width * sx / sy)
            return coords

        return self._cached(
            ('grid', height, width, step, offset, sx, sy, cls_pos), device,
            build)

    def gsa_keys(
        self,
        height: int,
        width: int,
        sr_ratio: int,
        mode: str = 'official',
        device: Optional[torch.device] = None,
        scale: Tuple[float, float] = (1., 1.)
    ) -> Tables:
        """Tables of the GSA sub-sampled keys (:func:`gsa_key_coords`)."""
        sx, sy = float(scale[0]), float(scale[1])

        def build():
            coords = gsa_key_coords(height, width, sr_ratio, mode, device)
            coords = coords * torch.tensor([sx, sy], device=device)
            if self.mode == '1d':  # keys on the raster of the query grid
                coords = raster_coords(coords, width * sx / sy)
            return coords

        return self._cached(
            ('gsa', height, width, int(sr_ratio), mode, sx, sy), device, build)

"""2D rotary position embedding (2D RoPE) and its auto-scaled form (AS2DRoPE).

VisionLLaMA (arXiv 2403.00522, §3 and ``spec-visionllama.md`` §2) rotates the
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
  ``'centroid'`` placement (§5.4);
* :func:`cls_token_coords` - the official class-token position (W - 1, -1);
* :func:`gather_tables` - per-sample gather of kept tokens (MAE, §3.8);
* :func:`anchor_scale` - AS2DRoPE coordinate scaling (§2.6).

The rotation is real-valued, ``x * cos + swap_pairs(x) * sin`` with a
sign-folded ``sin`` table (no complex dtypes, so it exports to ONNX, compiles
without graph breaks and autocasts); the angles are computed in fp32 with
autocast disabled, the rotation in fp32 (fp64 inputs stay fp64), and
everything is out of place. :class:`RotaryEmbedding2D` keeps a small,
bounded LRU cache of tables in eager mode.
"""
from collections import OrderedDict
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from visionllama_mm.utils import check_choice

__all__ = [
    'rope_frequencies', 'grid_coords', 'gsa_key_coords', 'cls_token_coords',
    'anchor_scale', 'coords_to_angles', 'angles_to_cos_sin', 'gather_tables',
    'apply_rope', 'RotaryEmbedding2D'
]

GSA_KEY_POS = ('official', 'centroid')
ANCHOR_MODES = ('height', 'per_axis')

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
    """Coordinates of the sub-sampled GSA keys (``spec-visionllama.md`` §5.4).

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
    """AS2DRoPE scale factors (s_x, s_y) for a grid (§2.6).

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


def coords_to_angles(coords: Tensor, freqs: Tensor) -> Tensor:
    """Per-pair angles ``[x t0, y t0, x t1, y t1, ...]``.

    Args:
        coords (Tensor): (..., 2) coordinates (x, y).
        freqs (Tensor): (P, ) frequencies.

    Returns:
        Tensor: (..., 2P) fp32 angles, one per adjacent channel pair.
    """
    angles = coords.float()[..., None, :] * freqs.float()[:, None]  # (.,P,2)
    return angles.flatten(-2)


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
    sin = angles.sin()
    return (angles.cos().repeat_interleave(2, dim=-1),
            torch.stack([-sin, sin], dim=-1).flatten(-2))


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
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    out = torch.addcmul(xf * cos, swapped, sin).to(x.dtype)
    if prefix is not None:
        out = torch.cat([prefix, out], dim=-2)
    return out


def gather_tables(cos: Tensor, sin: Tensor, ids_keep: Tensor) -> Tables:
    """Per-sample tables of the kept tokens (MAE random masking, §3.8).

    Args:
        cos (Tensor): (N, d) full-grid table.
        sin (Tensor): (N, d) full-grid table.
        ids_keep (Tensor): (B, K) indices of the kept tokens in the grid.

    Returns:
        tuple[Tensor, Tensor]: (B, K, d) tables.
    """
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
    """

    def __init__(self,
                 head_dim: int,
                 base: float = 10000.,
                 anchor: Optional[float] = None,
                 anchor_mode: str = 'height',
                 cache_size: int = 8) -> None:
        super().__init__()
        rope_frequencies(head_dim)  # validates head_dim
        check_choice('anchor_mode', anchor_mode, ANCHOR_MODES)
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
                f'anchor={self.anchor}, anchor_mode={self.anchor_mode!r}')

    def _apply(self, fn, *args, **kwargs):
        # Device / dtype moves drop every cached table (never stale).
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def scale_for(self, height: int, width: int) -> Tuple[float, float]:
        """AS2DRoPE factors of this module's anchor for an H x W grid."""
        return anchor_scale(height, width, self.anchor, self.anchor_mode)

    def tables(self, coords: Tensor) -> Tables:
        """Uncached (cos, sin) tables of shape (..., head_dim) for coords."""
        with torch.autocast(coords.device.type, enabled=False):
            freqs = rope_frequencies(self.head_dim, self.base, coords.device)
            return angles_to_cos_sin(coords_to_angles(coords, freqs))

    def cache_nbytes(self) -> int:
        """Bytes held by the cached tables."""
        return sum(t.numel() * t.element_size()
                   for entry in self._cache.values() for t in entry)

    def _cached(self, key: tuple, device, build) -> Tables:
        """Tables of ``build()`` coordinates, through the LRU cache."""
        if (torch.compiler.is_compiling() or torch.jit.is_tracing()
                or self.cache_size == 0):
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
            return coords * torch.tensor([sx, sy], device=device)

        return self._cached(
            ('gsa', height, width, int(sr_ratio), mode, sx, sy), device, build)

"""Pyramid VisionLLaMA: the Twins-SVT layout with 2D RoPE, SwiGLU, layer scale.

Paper: VisionLLaMA: A Unified LLaMA Backbone for Vision Tasks
(https://arxiv.org/abs/2403.00522), built on Twins-SVT
(https://arxiv.org/abs/2104.13840).

Four stages of pre-norm blocks (:class:`~visionllama_mm.layers.blocks.
LayerScaleBlock`) alternate locally-grouped self-attention
(:class:`GroupAttention`, LSA, window 7) and global sub-sampled attention
(:class:`GSAttention`, GSA, sub-sampling ratios 8 / 4 / 2 / 1). Queries and
keys are rotated by 2D RoPE: window-local coordinates in LSA; in GSA the
queries at their grid positions and the sub-sampled keys at the positions
they summarise (``gsa_key_pos``). There is no class token, no absolute
position embedding and no conditional position encoding (both exist as
switches for the paper's ablation: ``pos_embed_type``, ``use_rope``).
Numerics follow docs/pyramid.md; the attribute names follow the
released checkpoints (docs/pyramid.md#checkpoint-layout), so ``patch_embeds``,
``blocks.{k}.{j}``, ``norm``, ``head`` and ``norm_list`` load without renaming.

One class serves every face:

* ImageNet classifier (mmpretrain ``ImageClassifier`` + ``LinearClsHead``):
  ``out_type='avg_featmap'``, ``final_norm=True``, with the official double
  final norm (``head_double_norm=True``);
* dense backbone (mmseg UperNet, mmdet Mask R-CNN): ``norm_after_stage=True``
  (a new LayerNorm after every stage whose output also feeds the next
  stage), ``final_norm=False``, ``out_type='featmap'``,
  ``out_indices=(0, 1, 2, 3)``; :class:`PyramidVisionLLaMADET` has these
  defaults and ``auto_scale=True``;
* plain torch / timm-like use: ``num_classes > 0`` builds the ``head`` of the
  deit classifier; :meth:`PyramidVisionLLaMA.forward_features` and
  :meth:`PyramidVisionLLaMA.forward_head`.

Official quirks kept by default, each with an option
(docs/visionllama.md#official-quirks): GSA key coordinates (``gsa_key_pos``),
AS2DRoPE anchors (``auto_scale``, ``as_base_size``), unmasked window padding
(``mask_window_padding``), the double final norm (``head_double_norm``).
Official defects fixed by default: RoPE tables are recomputed per (H, W, scale,
device) and never stale (the upstream GSA cache is keyed on the token count
only; ``gsa_table_cache= 'token_count'`` restores it for an exact re-run of an
official detection run), and the reduced GSA grid comes from the conv output
(any input size works).

.. code-block:: bibtex

    @inproceedings{chu2024visionllama,
      title={VisionLLaMA: A Unified LLaMA Backbone for Vision Tasks},
      author={Chu, Xiangxiang and Su, Jianlin and Zhang, Bo and Shen, Chunhua},
      booktitle={European Conference on Computer Vision (ECCV)},
      year={2024}
    }
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import Tensor

from visionllama_mm.layers.attention import (head_dim_of, scaled_dot_product,
                                             use_fused_attn,
                                             window_padding_mask,
                                             window_partition,
                                             window_unpartition)
from visionllama_mm.layers.blocks import LayerScaleBlock, init_linear_norm_timm
from visionllama_mm.layers.patch_embed import PatchEmbed, tokens_to_featmap
from visionllama_mm.layers.rope import (ANCHOR_MODES, GSA_KEY_POS,
                                        RotaryEmbedding2D, anchor_scale,
                                        apply_rope)
from visionllama_mm.layers.swiglu import swiglu_hidden_dim
from visionllama_mm.registry import MODELS
from visionllama_mm.utils import (check_choice, check_image_input,
                                  parse_out_indices)
from .base import OfficialInitMixin, parse_arch

__all__ = [
    'PatchEmbed', 'GroupAttention', 'GSAttention', 'PosConv',
    'PyramidVisionLLaMA', 'PyramidVisionLLaMADET', 'checkpoint_filter_fn'
]

Tables = Tuple[Tensor, Tensor]

# which grid the GSA RoPE tables describe (``gsa_table_cache``)
GSA_TABLE_CACHES = ('per_shape', 'token_count')

# LSA window and GSA sub-sampling per stage, shared by every released size
_TWINS_WINDOWS = dict(window_sizes=[7, 7, 7, 7], sr_ratios=[8, 4, 2, 1])

# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


class GroupAttention(nn.Module):
    """Locally-grouped self-attention (LSA) with window-local 2D RoPE.

    The H x W tokens are zero-padded at the bottom / right to multiples of
    the window size *before* the ``qkv`` projection (as upstream, so padded
    keys carry the qkv bias), split into windows in raster order, and each
    window attends to itself with queries / keys rotated at their
    coordinates inside the window
    (docs/pyramid.md#locally-grouped-attention-lsa).

    Its :attr:`kind` is ``'lsa'``: the backbone hands it the window tables
    (``rope``).

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Attention heads.
        window_size (int): Window side. Defaults to 7.
        qkv_bias (bool): Bias of ``qkv``. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.
        mask_window_padding (bool): How padded positions are treated:

            - ``False`` (official): padded keys are attended to;
            - ``True``: a boolean key mask hides them (Twins-style).

            Defaults to False.
    """
    kind = 'lsa'

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 mask_window_padding: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim_of(dim, num_heads)
        self.window_size = window_size
        self.mask_window_padding = mask_window_padding
        self.fused_attn = use_fused_attn()
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return (f'window_size={self.window_size}, '
                f'mask_window_padding={self.mask_window_padding}')

    def forward(self, x: Tensor, hw_shape: Tuple[int, int],
                rope: Optional[Tables]) -> Tensor:
        """Attend inside windows.

        Args:
            x (Tensor): Normalised tokens (B, H * W, C).
            hw_shape (tuple[int, int]): (H, W).
            rope (tuple[Tensor, Tensor], optional): (cos, sin) of the window
                grid, (ws * ws, head_dim) each; None: no rotation.

        Returns:
            Tensor: (B, H * W, C).
        """
        B, N, C = x.shape
        ws = self.window_size
        # windows in raster order, raster order inside a window
        x, padded_hw = window_partition(x.view(B, *hw_shape, C), ws)
        qkv = self.qkv(x).view(-1, ws * ws, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B nW, heads, ws^2, d)
        qk = qkv[:2]
        if rope is not None:  # q and k in one pass
            qk = apply_rope(qk, *rope)
        mask = None
        if self.mask_window_padding:
            mask = window_padding_mask(B, hw_shape, padded_hw, ws, x.device)
        x = scaled_dot_product(
            qk[0],
            qk[1],
            qkv[2],
            attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.,
            fused=self.fused_attn)  # (B nW, heads, ws^2, d)
        x = x.transpose(1, 2).reshape(-1, ws * ws, C)
        x = window_unpartition(x, ws, padded_hw, hw_shape)
        return self.proj(x.reshape(B, N, C))


class GSAttention(nn.Module):
    """Global sub-sampled attention (GSA) with 2D RoPE.

    Every token queries the keys / values of a sub-sampled map: a conv with
    kernel = stride = ``sr_ratio`` (``sr``) and a LayerNorm (``norm``) when
    ``sr_ratio > 1`` (docs/pyramid.md#global-sub-sampled-attention-gsa). The
    reduced grid is the conv output, (H // s, W // s), so any input size works.
    Its :attr:`kind` is ``'gsa'``: the backbone hands it the query and key
    tables (``rope_q``, ``rope_k``).

    Args:
        dim (int): Embedding dimension C.
        num_heads (int): Attention heads.
        sr_ratio (int): Sub-sampling ratio s. Defaults to 1.
        qkv_bias (bool): Bias of ``q`` and ``kv``. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.
        norm_eps (float): eps of the reduced-token LayerNorm. Defaults to
            1e-5.
    """
    kind = 'gsa'

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim_of(dim, num_heads)
        self.sr_ratio = sr_ratio
        self.fused_attn = use_fused_attn()
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def extra_repr(self) -> str:
        return f'sr_ratio={self.sr_ratio}'

    def forward(self, x: Tensor, hw_shape: Tuple[int, int],
                rope_q: Optional[Tables], rope_k: Optional[Tables]) -> Tensor:
        """Attend from all tokens to the sub-sampled keys.

        Args:
            x (Tensor): Normalised tokens (B, H * W, C).
            hw_shape (tuple[int, int]): (H, W).
            rope_q (tuple[Tensor, Tensor], optional): Query tables
                (H * W, head_dim); None: no rotation.
            rope_k (tuple[Tensor, Tensor], optional): Key tables
                ((H // s) * (W // s), head_dim).

        Returns:
            Tensor: (B, H * W, C).
        """
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = x.transpose(1, 2).reshape(B, C, *hw_shape)
            x = self.norm(self.sr(x).flatten(2).transpose(1, 2))
        kv = self.kv(x).view(B, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, M, d)
        if rope_q is not None:
            q = apply_rope(q, *rope_q)
            k = apply_rope(k, *rope_k)
        x = scaled_dot_product(
            q,
            k,
            v,
            dropout_p=self.attn_drop if self.training else 0.,
            fused=self.fused_attn)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class PosConv(nn.Module):
    """Twins / CPVT position encoding generator (PEG): ``x + dwconv3x3(x)``.

    Only built with ``pos_embed_type='peg'`` (ablation); the parameter name
    ``proj.0`` follows Twins.

    Args:
        dim (int): Channels C.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim))

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Tokens (B, H * W, C) -> (B, H * W, C)."""
        feat = tokens_to_featmap(x, hw_shape)
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------


@MODELS.register_module()
class PyramidVisionLLaMA(OfficialInitMixin, BaseModule):
    """Pyramid VisionLLaMA (Twins-SVT layout; ``pllama_wols_*`` upstream).

    Args:
        arch (str | dict): Architecture. A name from :attr:`arch_zoo`:

            - ``'s'`` / ``'small'``: dims (64, 128, 256, 512), depths
              (2, 2, 10, 4), heads (2, 4, 8, 16); 25.9M parameters with the
              1000-class head;
            - ``'b'`` / ``'base'``: dims (96, 192, 384, 768), depths
              (2, 2, 18, 2), heads (3, 6, 12, 24); 56.0M;
            - ``'l'`` / ``'large'``: dims (128, 256, 512, 1024), depths
              (2, 2, 18, 2), heads (4, 8, 16, 32); 104.7M;

            or a dict with the keys ``embed_dims``, ``depths``,
            ``num_heads``, ``window_sizes`` and ``sr_ratios`` (and optionally
            ``patch_sizes``, default (4, 2, 2, 2)), one value per stage.
            Defaults to ``'base'``.
        in_channels (int): Input channels. Defaults to 3.
        out_type (str): What :meth:`forward` returns per ``out_indices``
            stage:

            - ``'avg_featmap'``: the pooled feature (B, C) (classifier face;
              for the last stage with ``final_norm`` see
              ``head_double_norm``);
            - ``'featmap'``: the NCHW map (dense face);
            - ``'raw'``: the tokens (B, H * W, C).

            Defaults to ``'avg_featmap'``.
        out_indices (int | Sequence[int]): Stages to output (negative
            indices count from the end). Defaults to -1.
        final_norm (bool): Build ``norm`` (LayerNorm of the last stage, the
            classifier's). Defaults to True.
        head_double_norm (bool): Pooling of the classifier face:

            - ``True`` (official deit classifier): ``norm`` before and again
              after the token mean, ``norm(mean(norm(x)))``; the released
              ImageNet accuracy needs it;
            - ``False``: ``mean(norm(x))`` (Twins).

            Defaults to True.
        norm_after_stage (bool): Build ``norm_list``: a LayerNorm after each
            stage whose output is returned *and* feeds the next stage (mmseg
            Twins convention; the upstream seg / det backbones). Defaults to
            False.
        num_classes (int): > 0 builds the deit classifier ``head`` (Linear)
            for :meth:`forward_head`; 0 for the OpenMMLab faces (mmpretrain's
            ``LinearClsHead`` is the head there). Defaults to 0.
        gsa_key_pos (str): Coordinates of the sub-sampled GSA keys
            (docs/pyramid.md#gsa-key-positions):

            - ``'official'``: what the released checkpoints were trained
              with, ``(j mod W) s + 1 - 1/s`` with the full-resolution W;
            - ``'centroid'``: the paper's average of the summarised
              positions, ``(j mod W') s + (s - 1) / 2``.

            Defaults to ``'official'``.
        auto_scale (bool): AS2DRoPE in GSA: scale the GSA query and key
            coordinates by ``as_base_size / H_stage`` (LSA is never scaled).
            The official seg / det configs use True, ImageNet pretraining
            False (docs/pyramid.md#as2drope-in-the-pyramid). Defaults to False.
        as_base_size (int | Sequence[int]): AS2DRoPE anchor, one for all
            stages (official: 14) or one per stage; ``[56, 28, 14, 7]`` keeps
            the ImageNet-pretraining scale 1 at 224 px (opt-in for new
            training). Defaults to 14.
        anchor_mode (str): AS2DRoPE factor: ``'height'`` (official,
            isotropic ``B / H``) or ``'per_axis'`` (``B / W`` for x,
            ``B / H`` for y). Defaults to ``'height'``.
        mask_window_padding (bool): Mask the zero padding of LSA windows
            (``False`` = official, padded keys attended to). Defaults to
            False.
        gsa_table_cache (str): Which grid the GSA RoPE tables describe:

            - ``'per_shape'``: the current (H, W) of every forward (correct;
              multi-scale detection feeds many shapes);
            - ``'token_count'``: the official cache, reproduced for exact
              re-runs: each stage keeps the (H, W) its GSA query (and,
              separately, key) tables were last built for and rebuilds them
              only when the token count H * W (key count H * W // s**2)
              changes, so an input with the same count but another
              H x W gets the stale tables (and stale AS2DRoPE scale). The
              state is one (H, W) per stage and table kind, never saved.

            Defaults to ``'per_shape'``.
        drop_path_rate (float): Stochastic depth, linear from 0 over all
            blocks, on both residual branches. Defaults to 0.
        attn_drop_rate (float): Attention dropout. Defaults to 0.
        qkv_bias (bool): Biases of ``qkv`` / ``q`` / ``kv``. Defaults to
            True.
        layer_scale (float, optional): Initial ``gamma_1 / gamma_2`` (the
            "wols" models have them too); None disables. Defaults to 1e-4.
        norm_eps (float): eps of every LayerNorm. Defaults to 1e-5.
        rope_base (float): RoPE base. Defaults to 10000.
        rope_cfg (dict, optional): Extra :class:`~visionllama_mm.layers.
            rope.RotaryEmbedding2D` options for the paper's position
            ablations: ``mode`` (``'2d'`` official, ``'1d'`` raster,
            ``'mixed'`` learnable RoPE-Mixed), ``ratio`` (partial RoPE),
            ``per_head`` (frequencies per head), ``ntk_alpha`` (NTK-aware
            base). None keeps the official 2D RoPE. Defaults to None.
        use_rope (bool): Rotate queries and keys by 2D RoPE (official).
            False leaves attention position-free, e.g. with only a
            ``pos_embed_type`` (ablation). Defaults to True.
        pos_embed_type (str, optional): Extra position encoding (the
            paper's pyramid ablation; none in the official models):

            - ``None``: none (official);
            - ``'learned'``: a learned absolute embedding per stage
              (``pos_embeds.{k}``, PVT-style), added after the stage's
              patch embedding, sized for ``img_size`` and resized bicubically
              to other grids (as DeiT fine-tunes at new resolutions);
            - ``'peg'``: Twins' position encoding generator after the first
              block of every stage (``pos_block.{k}``, a depthwise 3x3 conv
              with a residual).

            Defaults to None.
        img_size (int | tuple): Input size the ``'learned'`` tables are
            built for. Defaults to 224.
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem
            (``patch_embeds.0``); k >= 1 freezes stages 0 .. k - 1 (their
            patch embeds, blocks and ``norm_list`` entries) and, for
            k = number of stages, ``norm``. Defaults to -1.
        with_cp (bool): Gradient checkpointing of every block. Defaults to
            False.
        init_cfg (dict | list[dict], optional): mmengine init config; None
            uses the official init (docs/pyramid.md#macro-structure). Defaults
            to None.
    """
    arch_zoo = {
        **dict.fromkeys(
            ['s', 'small'], {
                'embed_dims': [64, 128, 256, 512],
                'depths': [2, 2, 10, 4],
                'num_heads': [2, 4, 8, 16],
                **_TWINS_WINDOWS,
            }),
        **dict.fromkeys(
            ['b', 'base'], {
                'embed_dims': [96, 192, 384, 768],
                'depths': [2, 2, 18, 2],
                'num_heads': [3, 6, 12, 24],
                **_TWINS_WINDOWS,
            }),
        **dict.fromkeys(
            ['l', 'large'], {
                'embed_dims': [128, 256, 512, 1024],
                'depths': [2, 2, 18, 2],
                'num_heads': [4, 8, 16, 32],
                **_TWINS_WINDOWS,
            }),
    }
    essential_keys = {
        'embed_dims', 'depths', 'num_heads', 'window_sizes', 'sr_ratios'
    }
    optional_keys = {'patch_sizes'}
    OUT_TYPES = ('avg_featmap', 'featmap', 'raw')
    POS_EMBED_TYPES = (None, 'learned', 'peg')
    default_patch_sizes = (4, 2, 2, 2)

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 in_channels: int = 3,
                 out_type: str = 'avg_featmap',
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 head_double_norm: bool = True,
                 norm_after_stage: bool = False,
                 num_classes: int = 0,
                 gsa_key_pos: str = 'official',
                 auto_scale: bool = False,
                 as_base_size: Union[int, Sequence[int]] = 14,
                 anchor_mode: str = 'height',
                 mask_window_padding: bool = False,
                 gsa_table_cache: str = 'per_shape',
                 drop_path_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 qkv_bias: bool = True,
                 layer_scale: Optional[float] = 1e-4,
                 norm_eps: float = 1e-5,
                 rope_base: float = 10000.,
                 rope_cfg: Optional[dict] = None,
                 use_rope: bool = True,
                 pos_embed_type: Optional[str] = None,
                 img_size: Union[int, Sequence[int]] = 224,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        s = self.arch_settings
        self.embed_dims: List[int] = list(s['embed_dims'])
        self.depths: List[int] = list(s['depths'])
        self.num_heads: List[int] = list(s['num_heads'])
        self.window_sizes: List[int] = list(s['window_sizes'])
        self.sr_ratios: List[int] = list(s['sr_ratios'])
        self.patch_sizes: List[int] = list(
            s.get('patch_sizes', self.default_patch_sizes))
        self.num_stages = len(self.depths)
        self.num_layers = sum(self.depths)

        check_choice('out_type', out_type, self.OUT_TYPES)
        check_choice('gsa_key_pos', gsa_key_pos, GSA_KEY_POS)
        check_choice('anchor_mode', anchor_mode, ANCHOR_MODES)
        check_choice('gsa_table_cache', gsa_table_cache, GSA_TABLE_CACHES)
        self.out_type = out_type
        self.out_indices = tuple(
            sorted(
                set(
                    parse_out_indices(
                        out_indices, self.num_stages, unit='stages'))))
        self.final_norm = final_norm
        self.head_double_norm = head_double_norm
        self.norm_after_stage = norm_after_stage
        self.num_classes = num_classes
        self.gsa_key_pos = gsa_key_pos
        self.auto_scale = auto_scale
        self.as_base_size = self._parse_per_stage('as_base_size', as_base_size)
        self.anchor_mode = anchor_mode
        self.gsa_table_cache = gsa_table_cache
        # 'token_count' only: (stage, 'q' | 'k') -> (H, W) the tables were
        # last built for (at most 2 * num_stages entries)
        self._gsa_built_hw: Dict[Tuple[int, str], Tuple[int, int]] = {}
        check_choice('pos_embed_type', pos_embed_type, self.POS_EMBED_TYPES)
        self.use_rope = bool(use_rope)
        self.pos_embed_type = pos_embed_type
        self.img_size = ((img_size, img_size)
                         if isinstance(img_size, int) else tuple(img_size))
        self.with_cp = with_cp
        if num_classes > 0 and not final_norm:
            raise ValueError('num_classes > 0 (the deit classifier head) '
                             'needs final_norm=True')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, '
                             f'{self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages

        self.in_channels = in_channels
        self.patch_embeds = nn.ModuleList()
        for k in range(self.num_stages):
            self.patch_embeds.append(
                PatchEmbed(
                    in_channels if k == 0 else self.embed_dims[k - 1],
                    self.embed_dims[k],
                    self.patch_sizes[k],
                    conv_name='proj',
                    norm_eps=norm_eps,
                    strict_size=False))

        # stochastic depth: linear over all blocks of all stages
        dpr = torch.linspace(
            0, drop_path_rate, self.num_layers, device='cpu').tolist()
        self.blocks = nn.ModuleList()
        cur = 0
        for k in range(self.num_stages):
            dim, heads = self.embed_dims[k], self.num_heads[k]
            stage = nn.ModuleList()
            for j in range(self.depths[k]):
                # Twins alternates LSA (even j) and GSA (odd j). This is the
                # one place that decides: the block's attention carries its
                # kind (``attn.kind``), which the tables, the input-size
                # check and the forward read.
                if j % 2 == 0:
                    attn = GroupAttention(
                        dim,
                        heads,
                        window_size=self.window_sizes[k],
                        qkv_bias=qkv_bias,
                        attn_drop=attn_drop_rate,
                        mask_window_padding=mask_window_padding)
                else:
                    attn = GSAttention(
                        dim,
                        heads,
                        sr_ratio=self.sr_ratios[k],
                        qkv_bias=qkv_bias,
                        attn_drop=attn_drop_rate,
                        norm_eps=norm_eps)
                stage.append(
                    LayerScaleBlock(
                        dim,
                        heads,
                        swiglu_hidden_dim(dim, 'llama'),
                        attn=attn,
                        mlp_bias=False,
                        drop_path=dpr[cur + j],
                        layer_scale=layer_scale,
                        norm_eps=norm_eps))
            self.blocks.append(stage)
            cur += self.depths[k]
        # Stage k's grid is floor(H / (p_1 ... p_k)); a stage with GSA
        # blocks needs at least sr_ratio rows and columns of it.
        stride, self.min_input_size = 1, 1
        for k in range(self.num_stages):
            stride *= self.patch_sizes[k]
            need = stride * (self.sr_ratios[k] if self._has_gsa(k) else 1)
            self.min_input_size = max(self.min_input_size, need)

        if pos_embed_type == 'learned':
            self.pos_embeds = nn.ParameterList()
            h, w = self.img_size
            for k in range(self.num_stages):
                h, w = h // self.patch_sizes[k], w // self.patch_sizes[k]
                self.pos_embeds.append(
                    nn.Parameter(torch.zeros(1, h * w, self.embed_dims[k])))
                nn.init.trunc_normal_(self.pos_embeds[k], std=.02)
        elif pos_embed_type == 'peg':
            self.pos_block = nn.ModuleList(
                [PosConv(d) for d in self.embed_dims])

        # RoPE tables only (no parameters, nothing in the state_dict)
        self.ropes = nn.ModuleList([
            RotaryEmbedding2D(
                d // h,
                base=rope_base,
                **dict(dict(num_heads=h), **(rope_cfg or {})))
            for d, h in zip(self.embed_dims, self.num_heads)
        ])

        if norm_after_stage:
            self.norm_list = nn.ModuleList(
                [nn.LayerNorm(d, eps=norm_eps) for d in self.embed_dims])
        else:
            self.norm_list = None
        last = self.embed_dims[-1]
        self.norm = nn.LayerNorm(last, eps=norm_eps) if final_norm else None
        self.head = nn.Linear(last, num_classes) if num_classes > 0 else None

        self.apply(self._init_weights)
        self._register_load_state_dict_pre_hook(self._prepare_checkpoint)
        self._freeze_stages()

    # -- construction helpers ----------------------------------------------

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        arch = parse_arch(arch, self.arch_zoo, self.essential_keys,
                          self.optional_keys)
        lengths = {len(v) for v in arch.values()}
        if len(lengths) != 1:
            raise ValueError('every arch entry needs one value per stage, '
                             f'got lengths {lengths}')
        for d, h in zip(arch['embed_dims'], arch['num_heads']):
            if d % h != 0 or (d // h) % 4 != 0:
                raise ValueError(
                    f'embed_dims / num_heads must be a multiple of 4 for 2D '
                    f'RoPE, got {d} / {h}')
        return dict(arch)

    def _parse_per_stage(self, name: str, value) -> List:
        if isinstance(value, (int, float)):
            return [value] * self.num_stages
        if not isinstance(value, Sequence) or len(value) != self.num_stages:
            raise ValueError(f'{name} must be a number or a sequence of '
                             f'{self.num_stages} numbers, got {value!r}')
        return list(value)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official init (docs/pyramid.md#macro-structure): trunc-normal
        Linear, LN 1/0, He-out conv."""
        init_linear_norm_timm(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            fan_out //= m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _official_init(self) -> None:
        """The official init (what :meth:`init_weights` applies without an
        ``init_cfg``)."""
        self.apply(self._init_weights)

    @property
    def checkpoint_new_keys(self) -> tuple:
        """Tensors a pretrained checkpoint need not fill (fnmatch patterns).

        ``norm_list`` (dense face) is new: the released ImageNet classifiers
        have none. See :mod:`visionllama_mm.weights`.
        """
        return ('norm_list.*', ) if self.norm_list is not None else ()

    def _prepare_checkpoint(self, state_dict: dict, prefix: str, *args,
                            **kwargs) -> None:
        """Drop ``norm`` / ``head`` weights this face does not have.

        The released checkpoints are classifiers (with ``norm`` and
        ``head``); the seg / det face has neither (and a new ``norm_list``,
        reported as missing by the loader).
        """
        dropped = []
        for name, absent in (('norm.', self.norm is None), ('head.', self.head
                                                            is None)):
            if not absent:
                continue
            for key in [k for k in state_dict if k.startswith(prefix + name)]:
                dropped.append(key)
                del state_dict[key]
        if dropped:
            from mmengine.logging import MMLogger
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: ignored checkpoint keys of layers '
                f'this face does not build: {dropped}')

    # -- OpenMMLab face helpers ---------------------------------------------

    def _freeze_stages(self) -> None:
        modules = []
        if self.frozen_stages >= 0:
            modules.append(self.patch_embeds[0])
        for k in range(self.frozen_stages):
            modules += [self.patch_embeds[k], self.blocks[k]]
            if self.norm_list is not None:
                modules.append(self.norm_list[k])
        if self.frozen_stages == self.num_stages and self.norm is not None:
            modules.append(self.norm)
        for m in modules:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'PyramidVisionLLaMA':
        super().train(mode)
        self._freeze_stages()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (saves memory)."""
        self.with_cp = enable

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
        """Layer-wise LR decay depth of a parameter.

        Blocks get 1 .. L in global order (L = total blocks); the stem
        ``patch_embeds.0`` gets 0; the patch embed of stage k >= 1 the depth
        of the first block of stage k (the ``'learned'`` ``pos_embeds.k``
        and ``'peg'`` ``pos_block.k`` likewise, ``pos_embeds.0`` 0);
        everything else (``norm_list``,
        ``norm``, ``head`` and modules outside the backbone) L + 1.

        Args:
            param_name (str): Parameter name.
            prefix (str): Prefix of the backbone's parameters. Defaults to
                ``'backbone.'``.

        Returns:
            tuple[int, int]: (depth of the parameter, number of depths
            L + 2).
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):].split('.')
        if name[0] in ('patch_embeds', 'pos_embeds'):
            k = int(name[1])
            depth = 0 if k == 0 else sum(self.depths[:k]) + 1
        elif name[0] == 'pos_block':
            depth = sum(self.depths[:int(name[1])]) + 1
        elif name[0] == 'blocks':
            k, j = int(name[1]), int(name[2])
            depth = sum(self.depths[:k]) + j + 1
        else:
            depth = num_layers - 1
        return depth, num_layers

    # -- forward -------------------------------------------------------------

    def _has_gsa(self, stage: int) -> bool:
        """Whether stage ``stage`` has a GSA block (then it needs the GSA
        tables and a grid of at least ``sr_ratio`` tokens per side)."""
        return any(block.attn.kind == 'gsa' for block in self.blocks[stage])

    def stage_tables(self, stage: int, hw_shape: Tuple[int, int],
                     device: torch.device) -> Dict[str, Tables]:
        """RoPE tables of one stage for an H x W token grid.

        Args:
            stage (int): Stage index.
            hw_shape (tuple[int, int]): (H, W) of the stage's tokens.
            device (torch.device): Device of the tables.

        Returns:
            dict: ``'lsa'`` window-local (ws * ws, d) tables, ``'gsa_q'``
            (H * W, d) query tables and ``'gsa_k'`` ((H // s) * (W // s), d)
            key tables, cached per (H, W, scale, device) in the stage's
            :class:`RotaryEmbedding2D`.
        """
        if not self.use_rope:
            return dict(lsa=None, gsa_q=None, gsa_k=None)
        H, W = hw_shape
        rope, ws = self.ropes[stage], self.window_sizes[stage]
        tables = dict(lsa=rope.grid(ws, ws, device, scale=(1., 1.)))
        if self._has_gsa(stage):
            s = self.sr_ratios[stage]
            qH, qW = self._gsa_table_hw(stage, 'q', H, W, 1)
            kH, kW = self._gsa_table_hw(stage, 'k', H, W, s)
            tables['gsa_q'] = rope.grid(
                qH, qW, device, scale=self._gsa_scale(stage, qH, qW))
            tables['gsa_k'] = rope.gsa_keys(
                kH,
                kW,
                s,
                self.gsa_key_pos,
                device,
                scale=self._gsa_scale(stage, kH, kW))
        return tables

    def _gsa_scale(self, stage: int, H: int, W: int) -> Tuple[float, float]:
        if not self.auto_scale:
            return (1., 1.)
        return anchor_scale(H, W, self.as_base_size[stage], self.anchor_mode)

    def _gsa_table_hw(self, stage: int, kind: str, H: int, W: int,
                      s: int) -> Tuple[int, int]:
        """Grid the GSA ``kind`` tables describe (see ``gsa_table_cache``).

        With ``'token_count'`` the (H, W) of the last build is kept while
        the token count ``H * W // s**2`` is unchanged, as the official
        per-module cache does.
        """
        if self.gsa_table_cache == 'per_shape':
            return H, W
        built = self._gsa_built_hw.get((stage, kind))
        if built is None or built[0] * built[1] // (s * s) != H * W // (s * s):
            built = (H, W)
            self._gsa_built_hw[(stage, kind)] = built
        return built

    def resized_pos_embed(self, stage: int, hw_shape: Tuple[int,
                                                            int]) -> Tensor:
        """Stage ``stage``'s learned embedding on an (H, W) grid (1, N, C).

        Bicubic resize (``align_corners=False``) of the table built for
        ``img_size`` when the grid differs, as DeiT / mmpretrain's
        ``resize_pos_embed``.
        """
        pos = self.pos_embeds[stage]
        h, w = self.img_size
        for p in self.patch_sizes[:stage + 1]:
            h, w = h // p, w // p
        if (h, w) == tuple(hw_shape):
            return pos
        grid = tokens_to_featmap(pos, (h, w))
        grid = F.interpolate(
            grid, size=hw_shape, mode='bicubic', align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def _run_block(self, block: nn.Module, x: Tensor, **kwargs) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(block, x, use_reentrant=False, **kwargs)
        return block(x, **kwargs)

    def forward_stage(self, stage: int,
                      x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch-embed (B, C, H, W) and run one stage; tokens (B, N, C)."""
        if stage == 0:
            check_image_input(
                x,
                self.in_channels,
                min_size=self.min_input_size,
                why='every stage with global sub-sampled attention needs a '
                'grid of at least sr_ratio x sr_ratio tokens; sizes need not '
                'be multiples of the patch size (they are floored)')
        x, hw_shape = self.patch_embeds[stage](x)
        if self.pos_embed_type == 'learned':
            x = x + self.resized_pos_embed(stage, hw_shape)
        tables = self.stage_tables(stage, hw_shape, x.device)
        # the tables each attention kind reads
        rope = dict(
            lsa=dict(rope=tables['lsa']),
            gsa=dict(rope_q=tables.get('gsa_q'), rope_k=tables.get('gsa_k')))
        for j, block in enumerate(self.blocks[stage]):
            x = self._run_block(
                block, x, hw_shape=hw_shape, **rope[block.attn.kind])
            if j == 0 and self.pos_embed_type == 'peg':
                # Twins' PEG follows the first block of every stage
                x = self.pos_block[stage](x, hw_shape)
        if self.norm_list is not None:
            x = self.norm_list[stage](x)
        return x, hw_shape

    def _pool(self, x: Tensor) -> Tensor:
        """GAP of normalised last-stage tokens, optionally normed again."""
        x = x.mean(dim=1)
        return self.norm(x) if self.head_double_norm else x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """OpenMMLab face: a tuple with one output per ``out_indices``."""
        outs = []
        last = self.num_stages - 1
        for k in range(self.num_stages):
            x, hw_shape = self.forward_stage(k, x)
            if k == last and self.norm is not None:
                x = self.norm(x)
            if k in self.out_indices:
                if self.out_type == 'raw':
                    outs.append(x)
                elif self.out_type == 'featmap':
                    outs.append(tokens_to_featmap(x, hw_shape))
                elif k == last and self.norm is not None:
                    outs.append(self._pool(x))
                else:
                    outs.append(x.mean(dim=1))
            if k < last:
                x = tokens_to_featmap(x, hw_shape)
        return tuple(outs)

    def forward_features(self, x: Tensor) -> Tensor:
        """Last-stage tokens (B, N, C), after ``norm`` when built."""
        for k in range(self.num_stages):
            x, hw_shape = self.forward_stage(k, x)
            if k < self.num_stages - 1:
                x = tokens_to_featmap(x, hw_shape)
        return self.norm(x) if self.norm is not None else x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool :meth:`forward_features` tokens and apply ``head``."""
        if self.norm is None:
            raise RuntimeError('forward_head needs final_norm=True')
        x = self._pool(x)
        if pre_logits or self.head is None:
            return x
        return self.head(x)


@MODELS.register_module()
class PyramidVisionLLaMADET(PyramidVisionLLaMA):
    """:class:`PyramidVisionLLaMA` with the seg / det defaults.

    The upstream mmdet name. Same parameters as the parent; the defaults
    differ: ``out_type='featmap'``, ``out_indices=(0, 1, 2, 3)``,
    ``final_norm=False``, ``norm_after_stage=True`` and ``auto_scale=True``
    (the official Mask R-CNN / UperNet settings,
    docs/pyramid.md#as2drope-in-the-pyramid,
    docs/dense.md#upernet-with-the-pyramid-backbone,
    docs/dense.md#mask-r-cnn-with-the-pyramid-backbone).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 out_type: str = 'featmap',
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 final_norm: bool = False,
                 norm_after_stage: bool = True,
                 auto_scale: bool = True,
                 **kwargs) -> None:
        super().__init__(
            arch=arch,
            out_type=out_type,
            out_indices=out_indices,
            final_norm=final_norm,
            norm_after_stage=norm_after_stage,
            auto_scale=auto_scale,
            **kwargs)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------

_PYRAMID_KEYS = ('patch_embeds.', 'blocks.', 'norm.', 'norm_list.', 'head.',
                 'pos_embeds.', 'pos_block.')


def checkpoint_filter_fn(state_dict: Dict[str, Tensor],
                         fmt: str = 'mmpretrain') -> Dict[str, Tensor]:
    """Map an official deit-format pyramid ``model`` dict to our faces.

    The attribute names already match (docs/pyramid.md#checkpoint-layout), so
    only the placement changes:

    - ``'mmpretrain'``: ``backbone.*`` plus ``head.fc.*`` (the classifier's
      ``LinearClsHead``), for ``ImageClassifier``;
    - ``'backbone'``: ``backbone.*`` without ``norm`` / ``head`` (mmseg /
      mmdet; ``norm_list`` is new and initialised by the model);
    - ``'timm'``: unchanged names (``PyramidVisionLLaMA(num_classes=...)``).

    Keys of an mmengine checkpoint of ours (``backbone.`` / ``head.fc.``
    names) are accepted as input too. Position tables are never stored, so
    there is nothing to drop besides non-tensor entries.

    Args:
        state_dict (dict): The source weights.
        fmt (str): ``'mmpretrain'``, ``'backbone'`` or ``'timm'``. Defaults
            to ``'mmpretrain'``.

    Returns:
        dict: A new tensors-only state dict.
    """
    check_choice('fmt', fmt, ('mmpretrain', 'backbone', 'timm'))
    plain = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            continue
        if key.startswith('module.'):  # DDP-wrapped saves
            key = key[len('module.'):]
        if key.startswith('backbone.'):
            key = key[len('backbone.'):]
        elif key.startswith('head.fc.'):
            key = 'head.' + key[len('head.fc.'):]
        elif not key.startswith(_PYRAMID_KEYS):
            continue  # e.g. decode heads / necks of a dense checkpoint
        plain[key] = value.detach().clone()
    if fmt == 'timm':
        return plain
    out = {}
    for key, value in plain.items():
        if key.startswith('head.'):
            if fmt == 'mmpretrain':
                out['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.') and fmt == 'backbone':
            continue
        else:
            out['backbone.' + key] = value
    return out

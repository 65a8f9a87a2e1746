"""Plain VisionLLaMA backbone, mmpretrain style (MAE / FT / LP / dense).

VisionLLaMA: A Unified LLaMA Backbone for Vision Tasks
(https://arxiv.org/abs/2403.00522). This is the plain model of the released
mmpretrain code (docs/visionllama.md#plain-model-mmpretrain-style): patch
embedding without any absolute position embedding, pre-norm blocks with 2D RoPE
attention and a SwiGLU FFN, optional final norm, and the mmpretrain output
formats. Its parameter names (``patch_embed.projection``, ``layers.i.{ln1,
attn.qkv, attn.proj, ln2, ffn.w12, ffn.w3}``, ``ln1``, ``ln2``, ``cls_token``)
match the official MAE / fine-tune / linear-probe checkpoints.

Differences from the released code, all on purpose
(docs/visionllama.md#official-quirks):

* RoPE tables follow the runtime (H, W) of every input (non-square too);
  the official tables are fixed by the constructor ``img_size`` on a square
  grid, which is identical whenever the input matches ``img_size``.
* No ``pos_embed`` parameter (the official one is never added); a load hook
  drops it from incoming checkpoints.
* A class token (``with_cls_token=True``) is prepended but not rotated
  (the official forward crashes in that case).
* Valid defaults (``out_type='avg_featmap'``, ``with_cls_token=False``).

The forward is split into small methods that subclasses (``MAELLaMA``,
``LLaMADET``) reuse: :meth:`patch_embed` (a module returning tokens and the
token grid), :meth:`_rope_tables`, :meth:`_build_layer`, :meth:`_layer_kwargs`
and :meth:`_run_layer` (gradient checkpointing) and :meth:`_forward_layers`.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from visionllama_mm.layers import (FFN_TYPES, NORM_TYPES, RotaryEmbedding2D,
                                   VisionLLaMABlock, build_norm,
                                   swiglu_hidden_dim)
from visionllama_mm.registry import MODELS
from visionllama_mm.utils import (check_choice, check_image_input,
                                  check_positive_int, parse_out_indices)

__all__ = [
    'PatchEmbed', 'VisionLLaMA', 'check_image_input', 'parse_arch',
    'parse_out_indices', 'parse_norm_cfg', 'plain_layer_depth',
    'tokens_to_featmap'
]

Tables = Tuple[Tensor, Tensor]


def parse_arch(arch: Union[str, dict], arch_zoo: Dict[str, dict],
               essential_keys: Sequence[str]) -> dict:
    """Look ``arch`` up in ``arch_zoo`` or validate a custom arch dict."""
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise ValueError(f'arch must be one of {sorted(arch_zoo)} or a '
                             f'dict, got {arch!r}')
        return dict(arch_zoo[key])
    if not isinstance(arch, dict) or not set(essential_keys) <= set(arch):
        raise ValueError('a custom arch must be a dict with the keys '
                         f'{list(essential_keys)}, got {arch!r}')
    return dict(arch)


def plain_layer_depth(param_name: str, prefix: str, num_layers: int,
                      blocks: str) -> Tuple[int, int]:
    """Layer-wise LR-decay depth in a plain (single-stage) ViT.

    Args:
        param_name (str): Parameter name (of the whole model).
        prefix (str): Prefix of the backbone's parameters.
        num_layers (int): Number of blocks.
        blocks (str): Name of the block list (``'layers'``, ``'blocks'``).

    Returns:
        tuple[int, int]: (depth, num_layers + 2). ``cls_token``,
        ``pos_embed`` and ``patch_embed.*`` get 0, ``<blocks>.i.*`` get
        i + 1, everything else (final norms, heads) num_layers + 1.
    """
    num_depths = num_layers + 2
    if not param_name.startswith(prefix):
        return num_depths - 1, num_depths
    name = param_name[len(prefix):]
    if name in ('cls_token', 'pos_embed') or name.startswith('patch_embed'):
        return 0, num_depths
    if name.startswith(blocks + '.'):
        return int(name.split('.')[1]) + 1, num_depths
    return num_depths - 1, num_depths


def tokens_to_featmap(x: Tensor, hw: Tuple[int, int]) -> Tensor:
    """Tokens (B, H * W, C) -> a contiguous (B, C, H, W) map.

    Contiguous on purpose: a channels-last view survives convolutions (an
    FPN's outputs stay channels-last) and mmcv's ``RoIAlign`` reads its input
    as raw NCHW memory, so Mask R-CNN's RoI heads would get scrambled
    features.
    """
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, *hw).contiguous()


def parse_norm_cfg(norm_cfg: dict) -> Tuple[str, float]:
    """Validate a ``norm_cfg`` and return its (type, eps).

    ``type`` is ``'LN'`` (alias ``'LayerNorm'``; every official model) or
    ``'RMSNorm'`` (the paper's norm ablation).
    """
    norm_cfg = dict(norm_cfg)
    norm_type = norm_cfg.pop('type', 'LN')
    norm_type = {'LayerNorm': 'LN'}.get(norm_type, norm_type)
    if norm_type not in NORM_TYPES:
        raise ValueError(f'norm_cfg type must be one of {list(NORM_TYPES)} '
                         "(or 'LayerNorm'; LayerNorm is the norm of every "
                         f'official VisionLLaMA), got {norm_type!r}')
    eps = norm_cfg.pop('eps', 1e-5)
    norm_cfg.pop('requires_grad', None)
    if norm_cfg:
        raise ValueError(f'unsupported norm_cfg keys {sorted(norm_cfg)} '
                         "(allowed: 'type', 'eps')")
    return norm_type, float(eps)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (a strided ``nn.Conv2d``).

    The attribute is named ``projection`` as in mmcv's ``PatchEmbed`` so the
    official checkpoints load, but no mmcv op is used and the input is not
    padded: its size must be divisible by the patch size.

    Args:
        in_channels (int): Input image channels. Defaults to 3.
        embed_dims (int): Token width C. Defaults to 768.
        patch_size (int): Patch side in pixels. Defaults to 16.
        bias (bool): Bias of the projection. Defaults to True.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 768,
                 patch_size: int = 16,
                 bias: bool = True) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        check_positive_int('patch_size', patch_size)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.projection = nn.Conv2d(
            in_channels,
            embed_dims,
            kernel_size=patch_size,
            stride=patch_size,
            bias=bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Embed (B, C, H, W) images as (B, N, embed_dims) tokens.

        Returns:
            tuple: Tokens (B, N, C) in raster order and the token grid
            (H / patch, W / patch).
        """
        check_image_input(x, self.in_channels, self.patch_size)
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


def _arch_entry(embed_dims: int, num_layers: int, num_heads: int,
                feedforward_channels: int) -> Dict[str, int]:
    return dict(
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=num_heads,
        feedforward_channels=feedforward_channels)


@MODELS.register_module()
class VisionLLaMA(BaseModule):
    """Plain VisionLLaMA backbone (mmpretrain style).

    Args:
        arch (str | dict): Architecture. A name (or alias) from
            :attr:`arch_zoo`: ``'s'``/``'small'``, ``'b'``/``'base'``,
            ``'l'``/``'large'``, ``'h'``/``'huge'``, ``'eva-g'``/
            ``'eva-giant'``, ``'deit-t'``/``'deit-tiny'``, ``'deit-s'``/
            ``'deit-small'``/``'dinov2-s'``/``'dinov2-small'``,
            ``'deit-b'``/``'deit-base'``, ``'dinov2-g'``/``'dinov2-giant'``;
            or a dict with the keys

            - **embed_dims** (int): Token width C.
            - **num_layers** (int): Number of blocks.
            - **num_heads** (int): Attention heads (C / heads must be a
              multiple of 4).
            - **feedforward_channels** (int, optional): FFN width the
              ``'mmpretrain'`` hidden rule starts from. Defaults to 4 C.

            Defaults to ``'base'``.
        img_size (int | tuple): The usual input size, kept for reference;
            the model runs at any size divisible by the patch and builds its
            RoPE tables from the runtime size. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are
            returned (negative values count from the end). Defaults to -1.
        drop_path_rate (float): Stochastic depth rate of the last block; the
            rate grows linearly from 0 over the blocks. Defaults to 0.
        qkv_bias (bool): Bias of the qkv projections. Defaults to True.
        norm_cfg (dict): Norm layers: ``dict(type='LN', eps=...)`` (the
            official models use LayerNorm everywhere) or
            ``dict(type='RMSNorm', eps=...)`` (the paper's norm ablation).
            Defaults to ``dict(type='LN', eps=1e-6)``.
        final_norm (bool): Apply ``ln1`` to the output of the last block.
            Defaults to True.
        out_type (str): Output format of every selected block:

            - ``'raw'``: tokens (B, N(+1), C), class token first if any.
            - ``'featmap'``: patch tokens as (B, C, H/p, W/p).
            - ``'avg_featmap'``: ``ln2`` of the mean patch token, (B, C).
            - ``'cls_token'``: the class token (B, C); needs
              ``with_cls_token=True``.

            Defaults to ``'avg_featmap'``.
        with_cls_token (bool): Prepend a learnable class token. It is not
            rotated by RoPE (prefix skip). Defaults to False (official
            downstream setting).
        frozen_stages (int): Freeze the patch embedding, the class token and
            the first ``frozen_stages`` blocks (and the final norms when all
            blocks are frozen). -1 freezes nothing. Defaults to -1.
        ffn_hidden_rule (str): SwiGLU hidden width rule:

            - ``'mmpretrain'``: official, ``ceil256(8/3 * ffc)`` with
              ``ffc = feedforward_channels`` (8192 for base); needed for the
              released weights.
            - ``'llama'``: the paper / LLaMA rule ``ceil256(8/3 * C)``.

            Defaults to ``'mmpretrain'``.
        ffn_type (str): Feed-forward network of the blocks:

            - ``'swiglu'``: official SwiGLU of width ``ffn_hidden_rule``;
            - ``'mlp'``: the ViT GELU MLP of width ``feedforward_channels``
              (4 C by default), the paper's FFN ablation.

            Defaults to ``'swiglu'``.
        ffn_drop_path (bool): Also apply DropPath to the FFN branch. The
            official blocks apply it to the attention branch only. Defaults
            to False.
        as_anchor (float, optional): AS2DRoPE anchor in tokens: positions are
            scaled by ``as_anchor / H`` (see ``anchor_mode``). The official
            plain models use raw integer positions (None). Defaults to None.
        anchor_mode (str): ``'height'`` (official isotropic ``B / H``) or
            ``'per_axis'`` (x by ``B / W``, y by ``B / H``). Defaults to
            ``'height'``.
        rope_base (float): RoPE base. Defaults to 10000.
        rope_cfg (dict, optional): Extra :class:`~visionllama_mm.layers.
            rope.RotaryEmbedding2D` options for the paper's position
            ablations: ``mode`` (``'2d'`` official, ``'1d'`` raster,
            ``'mixed'`` learnable RoPE-Mixed), ``ratio`` (partial RoPE),
            ``per_head`` (frequencies per head), ``ntk_alpha`` (NTK-aware
            base). None keeps the official 2D RoPE. Defaults to None.
        with_cp (bool): Gradient checkpointing of every block. Defaults to
            False.
        layer_cfgs (dict | Sequence[dict]): Extra keyword arguments of the
            blocks (one dict for all, or one per block). Defaults to an
            empty dict.
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config. Defaults to None.
    """
    arch_zoo = {
        **dict.fromkeys(['s', 'small'], _arch_entry(768, 8, 8, 768 * 3)),
        **dict.fromkeys(['b', 'base'], _arch_entry(768, 12, 12, 3072)),
        **dict.fromkeys(['l', 'large'], _arch_entry(1024, 24, 16, 4096)),
        **dict.fromkeys(['h', 'huge'], _arch_entry(1280, 32, 16, 5120)),
        **dict.fromkeys(['eva-g', 'eva-giant'], _arch_entry(
                            1408, 40, 16, 6144)),
        **dict.fromkeys(['deit-t', 'deit-tiny'], _arch_entry(192, 12, 3, 768)),
        **dict.fromkeys(['deit-s', 'deit-small', 'dinov2-s', 'dinov2-small'],
                        _arch_entry(384, 12, 6, 1536)),
        **dict.fromkeys(['deit-b', 'deit-base'], _arch_entry(
                            768, 12, 12, 3072)),
        **dict.fromkeys(['dinov2-g', 'dinov2-giant'],
                        _arch_entry(1536, 40, 24, 6144)),
    }
    ESSENTIAL_KEYS = ('embed_dims', 'num_layers', 'num_heads')
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    # Checkpoint entries of the backbone's own namespace that the model has
    # no use for (the official, never-added position embedding).
    UNUSED_KEYS = ('pos_embed', )

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 final_norm: bool = True,
                 out_type: str = 'avg_featmap',
                 with_cls_token: bool = False,
                 frozen_stages: int = -1,
                 ffn_hidden_rule: str = 'mmpretrain',
                 ffn_type: str = 'swiglu',
                 ffn_drop_path: bool = False,
                 as_anchor: Optional[float] = None,
                 anchor_mode: str = 'height',
                 rope_base: float = 10000.,
                 rope_cfg: Optional[dict] = None,
                 with_cp: bool = False,
                 layer_cfgs: Union[dict, Sequence[dict]] = dict(),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = parse_arch(arch, self.arch_zoo,
                                        self.ESSENTIAL_KEYS)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        self.num_heads = self.arch_settings['num_heads']
        if self.embed_dims % self.num_heads:
            raise ValueError(f'arch: embed_dims ({self.embed_dims}) must be '
                             f'divisible by num_heads ({self.num_heads})')
        self.head_dim = self.embed_dims // self.num_heads
        self.img_size = ((img_size, img_size)
                         if isinstance(img_size, int) else tuple(img_size))
        self.patch_size = patch_size
        self.patch_resolution = (self.img_size[0] // patch_size,
                                 self.img_size[1] // patch_size)

        check_choice('out_type', out_type, self.OUT_TYPES)
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        self.out_type = out_type
        self.norm_type, self.norm_eps = parse_norm_cfg(norm_cfg)
        check_choice('ffn_type', ffn_type, FFN_TYPES)
        self.ffn_type = ffn_type
        self.ffn_hidden_rule = ffn_hidden_rule
        ffc = self.arch_settings.get('feedforward_channels')
        if ffn_type == 'swiglu':
            self.ffn_hidden = swiglu_hidden_dim(
                self.embed_dims, rule=ffn_hidden_rule, ffn_channels=ffc)
        else:
            self.ffn_hidden = ffc or 4 * self.embed_dims

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=self.embed_dims,
            patch_size=patch_size)

        self.with_cls_token = with_cls_token
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        else:
            self.cls_token = None
        self.num_extra_tokens = 1 if with_cls_token else 0

        self.rope = RotaryEmbedding2D(
            self.head_dim,
            base=rope_base,
            anchor=as_anchor,
            anchor_mode=anchor_mode,
            **dict(dict(num_heads=self.num_heads), **(rope_cfg or {})))
        self.as_anchor = as_anchor

        self.out_indices = parse_out_indices(out_indices, self.num_layers)

        if isinstance(layer_cfgs, dict):
            layer_cfgs = [layer_cfgs] * self.num_layers
        if len(layer_cfgs) != self.num_layers:
            raise ValueError(f'layer_cfgs has {len(layer_cfgs)} entries for '
                             f'{self.num_layers} layers')
        self.qkv_bias = qkv_bias
        self.ffn_drop_path = ffn_drop_path
        # linear stochastic-depth schedule (plain floats: works on 'meta')
        dpr = [
            drop_path_rate * i / max(self.num_layers - 1, 1)
            for i in range(self.num_layers)
        ]
        self.layers = nn.ModuleList([
            self._build_layer(i, dpr[i], dict(layer_cfgs[i]))
            for i in range(self.num_layers)
        ])

        self.final_norm = final_norm
        if final_norm:
            self.ln1 = build_norm(self.norm_type, self.embed_dims,
                                  self.norm_eps)
        if out_type == 'avg_featmap':
            self.ln2 = build_norm(self.norm_type, self.embed_dims,
                                  self.norm_eps)

        self.grad_checkpointing = with_cp
        self._init_official()
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._drop_unused_keys)

    # ------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------
    def _build_layer(self, index: int, drop_path: float,
                     layer_cfg: dict) -> nn.Module:
        """Build block ``index``; subclasses override for other blocks."""
        cfg = dict(
            dim=self.embed_dims,
            num_heads=self.num_heads,
            ffn_hidden=self.ffn_hidden,
            qkv_bias=self.qkv_bias,
            drop_path=drop_path,
            ffn_drop_path=self.ffn_drop_path,
            norm_eps=self.norm_eps,
            norm_type=self.norm_type,
            ffn_type=self.ffn_type)
        cfg.update(layer_cfg)
        return VisionLLaMABlock(**cfg)

    # ------------------------------------------------------------------
    # initialisation, freezing, checkpoint loading
    # ------------------------------------------------------------------
    def _init_official(self) -> None:
        """Official init (docs/visionllama.md#plain-initialisation): FFN
        xavier-uniform, bias N(0, 1e-6).

        The other Linear layers keep the PyTorch default unless an
        ``init_cfg`` overrides them; the class token is N(0, 0.02).
        """
        for layer in self.layers:
            ffn = getattr(layer, 'ffn', None) or getattr(layer, 'mlp', None)
            if ffn is None:
                continue
            for m in ffn.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.normal_(m.bias, std=1e-6)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'
        if not pretrained:
            self._init_official()

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages >= self.num_layers:
            frozen += [
                getattr(self, name) for name in ('ln1', 'ln2')
                if hasattr(self, name)
            ]
        for m in frozen:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False
        if self.cls_token is not None:
            self.cls_token.requires_grad = False

    def train(self, mode: bool = True) -> 'VisionLLaMA':
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self

    @property
    def checkpoint_new_keys(self) -> tuple:
        """Tensors a pretrained checkpoint need not fill (fnmatch patterns).

        ``ln2``, the norm after average pooling, is new when a fine-tune
        starts from MAE weights (which have none); see
        :mod:`visionllama_mm.weights`.
        """
        return ('ln2.*', ) if self.out_type == 'avg_featmap' else ()

    def _drop_unused_keys(self, state_dict: dict, prefix: str, *args,
                          **kwargs) -> None:
        """Load pre-hook: drop ``pos_embed`` (and an unused class token).

        The official checkpoints carry a ``pos_embed`` that is never added
        (docs/visionllama.md#no-position-embedding), and MAE checkpoints a
        ``cls_token`` that downstream models without a class token do not use.
        """
        unused = list(self.UNUSED_KEYS)
        if self.cls_token is None:
            unused.append('cls_token')
        dropped = [
            prefix + name for name in unused if prefix + name in state_dict
        ]
        for key in dropped:
            del state_dict[key]
        if dropped:
            print_log(
                f'{type(self).__name__}: dropped unused checkpoint entries '
                f'{dropped}',
                logger='current',
                level=10)  # logging.DEBUG

    # ------------------------------------------------------------------
    # timm-style helpers
    # ------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient checkpointing of the blocks on or off."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set:
        """Parameter names that should not be weight-decayed."""
        return {'cls_token'}

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
        """Layer-wise depth of a parameter for LR decay
        (docs/visionllama.md#layer-wise-lr-decay).

        Args:
            param_name (str): Parameter name (of the whole model).
            prefix (str): Prefix of the backbone's parameters. Defaults to
                ``'backbone.'``.

        Returns:
            tuple[int, int]: (depth, num_layers + 2). ``cls_token``,
            ``pos_embed`` and ``patch_embed.*`` get 0, ``layers.i.*`` get
            i + 1, everything else (final norms, heads) num_layers + 1.
        """
        return plain_layer_depth(param_name, prefix, self.num_layers, 'layers')

    # ------------------------------------------------------------------
    # forward pieces (reused by subclasses)
    # ------------------------------------------------------------------
    def _rope_tables(self, height: int, width: int,
                     device: torch.device) -> Tables:
        """(cos, sin) of the H x W token grid, each (H * W, head_dim).

        Integer positions, scaled by the AS2DRoPE anchor if one is set.
        Tables are cached per (H, W, scale, device) by the RoPE module.
        """
        return self.rope.grid(height, width, device=device)

    def _prepend_cls_token(self, x: Tensor) -> Tensor:
        if self.cls_token is None:
            return x
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def _layer_kwargs(self, index: int, hw: Tuple[int, int],
                      rope: Tables) -> dict:
        """Keyword arguments of block ``index`` (subclasses may override)."""
        return dict(rope=rope, num_prefix_tokens=self.num_extra_tokens)

    def _run_layer(self, layer: nn.Module, x: Tensor, **kwargs) -> Tensor:
        """Call one block, with gradient checkpointing when enabled."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, x, use_reentrant=False, **kwargs)
        return layer(x, **kwargs)

    def _forward_layers(self, x: Tensor,
                        hw: Tuple[int, int]) -> Tuple[Tensor, List[Tensor]]:
        """Run every block; returns the final tokens and formatted outs."""
        rope = self._rope_tables(hw[0], hw[1], x.device)
        outs = []
        for i, layer in enumerate(self.layers):
            x = self._run_layer(layer, x, **self._layer_kwargs(i, hw, rope))
            if i == self.num_layers - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw))
        return x, outs

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch-embed images and prepend the class token if any."""
        x, hw = self.patch_embed(x)
        return self._prepend_cls_token(x), hw

    def _format_output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patch_tokens = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            return tokens_to_featmap(patch_tokens, hw)
        return self.ln2(patch_tokens.mean(dim=1))

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens (B, N(+1), C) after the last block (and ``ln1``)."""
        x, hw = self._embed(x)
        x, _ = self._forward_layers(x, hw)
        return x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return the outputs of the blocks in ``out_indices`` as a tuple."""
        x, hw = self._embed(x)
        _, outs = self._forward_layers(x, hw)
        return tuple(outs)

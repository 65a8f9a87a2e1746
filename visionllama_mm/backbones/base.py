"""What the plain VisionLLaMA backbones share, held once.

:class:`PlainVisionLLaMABase` is the base of the plain family:
:class:`~visionllama_mm.backbones.VisionLLaMA` (mmpretrain style),
:class:`~visionllama_mm.backbones.LLaMADET` (ViTDet window blocks),
:class:`~visionllama_mm.selfsup.MAELLaMA` (the MAE encoder) and
:class:`~visionllama_mm.backbones.VisionLLaMADeiT` (the DeiT-III recipe).
It holds the arch table lookup, the patch embedding, the class token, the
RoPE module, the block loop with gradient checkpointing, the output formats,
freezing and train mode, the checkpoint load hook, the init rule and the
timm-style helpers. A subclass names its checkpoint layout (class
attributes :attr:`~PlainVisionLLaMABase.LAYERS`,
:attr:`~PlainVisionLLaMABase.NORMS`,
:attr:`~PlainVisionLLaMABase.PATCH_CONV`), builds its blocks
(:meth:`~PlainVisionLLaMABase._build_layer`) and states its official init
(:meth:`~OfficialInitMixin._official_init`).

Conventions every backbone of the package follows (the pyramid included):

* gradient checkpointing: the constructor argument and attribute ``with_cp``
  (mmpretrain's name), switched by ``set_grad_checkpointing()`` (timm's);
* ``init_cfg``: None keeps the model's official init (it is also applied at
  construction); any ``init_cfg`` (e.g. ``Pretrained``) replaces it
  (:class:`OfficialInitMixin`);
* arch tables: :func:`parse_arch`.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from visionllama_mm.layers import (FFN_TYPES, NORM_TYPES, RotaryEmbedding2D,
                                   build_norm, swiglu_hidden_dim)
from visionllama_mm.layers.patch_embed import PatchEmbed, tokens_to_featmap
from visionllama_mm.utils import check_choice, parse_out_indices

__all__ = [
    'PlainVisionLLaMABase', 'parse_arch', 'parse_norm_cfg', 'plain_layer_depth'
]

Tables = Tuple[Tensor, Tensor]


def parse_arch(arch: Union[str, dict],
               arch_zoo: Dict[str, dict],
               essential_keys: Sequence[str],
               optional_keys: Optional[Sequence[str]] = None) -> dict:
    """Look ``arch`` up in ``arch_zoo`` or validate a custom arch dict.

    Args:
        arch (str | dict): A name of ``arch_zoo`` (case-insensitive) or a
            dict of settings.
        arch_zoo (dict): Name -> settings.
        essential_keys (Sequence[str]): Keys a custom dict must have.
        optional_keys (Sequence[str], optional): The further keys it may
            have; None accepts (and leaves to the caller) any further key,
            so that one arch dict can serve several plain models. Defaults
            to None.

    Returns:
        dict: A copy of the settings.
    """
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise ValueError(f'arch must be one of {sorted(arch_zoo)} or a '
                             f'dict, got {arch!r}')
        return dict(arch_zoo[key])
    if not isinstance(arch, dict):
        raise ValueError(f'arch must be one of {sorted(arch_zoo)} or a '
                         f'dict, got {arch!r}')
    missing = set(essential_keys) - set(arch)
    unknown = set() if optional_keys is None else \
        set(arch) - set(essential_keys) - set(optional_keys)
    if missing or unknown:
        raise ValueError(
            f'a custom arch needs the keys {sorted(essential_keys)} '
            f'(optional: {sorted(optional_keys or ())}); missing '
            f'{sorted(missing)}, unknown {sorted(unknown)}')
    return dict(arch)


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


class OfficialInitMixin:
    """The init rule of the package's backbones (before ``BaseModule``).

    Without ``init_cfg``, :meth:`init_weights` applies the model's official
    init (:meth:`_official_init`, which the constructor applies too); any
    ``init_cfg`` (e.g. ``Pretrained``) replaces it.
    """

    @property
    def uses_official_init(self) -> bool:
        """Whether :meth:`init_weights` applies the official init."""
        return not self.init_cfg

    def init_weights(self) -> None:
        """mmengine's ``init_cfg``, or the official init without one."""
        super().init_weights()
        if self.uses_official_init:
            self._official_init()

    def _official_init(self) -> None:
        """The model's official initialisation."""
        raise NotImplementedError


class PlainVisionLLaMABase(OfficialInitMixin, BaseModule):
    """Base of the plain (single-stage) VisionLLaMA backbones.

    Not registered: build one of its subclasses, which pass these arguments
    on (their own defaults may differ). Names below are those of
    :class:`~visionllama_mm.backbones.VisionLLaMA`; the DeiT-style model
    calls the final norm ``norm`` and the blocks ``blocks``.

    Args:
        arch (str | dict): Name in :attr:`arch_zoo` or a dict with
            :attr:`ESSENTIAL_KEYS` (and :attr:`OPTIONAL_KEYS`). Defaults to
            ``'base'``.
        img_size (int | tuple): The usual input size, kept for reference;
            the model runs at any size divisible by the patch and builds its
            RoPE tables from the runtime size. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are
            returned (negative values count from the end). Defaults to -1.
        drop_path_rate (float): Stochastic depth rate of the last block; the
            rate grows linearly from 0 over the blocks. Defaults to 0.
        final_norm (bool): Apply ``ln1`` to the output of the last block.
            Defaults to True.
        out_type (str): Output format of every selected block:

            - ``'raw'``: tokens (B, N(+1), C), class token first if any.
            - ``'featmap'``: patch tokens as (B, C, H/p, W/p).
            - ``'avg_featmap'``: ``ln2`` of the mean patch token, (B, C).
            - ``'cls_token'``: the class token (B, C); needs
              ``with_cls_token=True``.

            Defaults to ``'avg_featmap'``.
        with_cls_token (bool): Prepend a learnable class token. Defaults
            to False (official downstream setting).
        cls_rope_pos (str | float, optional): RoPE position of the class
            token (see :meth:`~visionllama_mm.layers.rope.RotaryEmbedding2D.
            grid`); None leaves it unrotated (prefix skip). Defaults to
            None.
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
        norm_type (str): ``'LN'`` (official) or ``'RMSNorm'`` (the paper's
            norm ablation) for every norm. Defaults to ``'LN'``.
        norm_eps (float): Norm eps. Defaults to 1e-6.
        with_cp (bool): Gradient checkpointing of every block. Defaults to
            False.
        block_cfg (dict, optional): Keyword arguments of every block that
            only one family has (e.g. ``qkv_bias``, ``layer_scale``).
            Defaults to None.
        layer_cfgs (dict | Sequence[dict]): Extra keyword arguments of the
            blocks (one dict for all, or one per block). Defaults to an
            empty dict.
        init_cfg (dict | list[dict], optional): mmengine initialisation
            config; it replaces the official init (None keeps it).
            Defaults to None.
    """
    arch_zoo: Dict[str, dict] = {}
    ESSENTIAL_KEYS = ('embed_dims', 'num_layers', 'num_heads')
    # arch keys the model reads besides the essential ones (others are
    # accepted and ignored: one arch dict may serve several plain models)
    OPTIONAL_KEYS: Tuple[str, ...] = ()
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    # Checkpoint entries of the backbone's own namespace that the model has
    # no use for (the official, never-added position embedding).
    UNUSED_KEYS = ('pos_embed', )
    # checkpoint layout: the block list, the norms after the blocks (the
    # final norm first) and the patch-embedding conv
    LAYERS = 'layers'
    NORMS: Tuple[str, ...] = ('ln1', )
    PATCH_CONV = 'projection'

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_path_rate: float = 0.,
                 final_norm: bool = True,
                 out_type: str = 'avg_featmap',
                 with_cls_token: bool = False,
                 cls_rope_pos: Union[None, str, float] = None,
                 frozen_stages: int = -1,
                 ffn_hidden_rule: str = 'mmpretrain',
                 ffn_type: str = 'swiglu',
                 as_anchor: Optional[float] = None,
                 anchor_mode: str = 'height',
                 rope_base: float = 10000.,
                 rope_cfg: Optional[dict] = None,
                 norm_type: str = 'LN',
                 norm_eps: float = 1e-6,
                 with_cp: bool = False,
                 block_cfg: Optional[dict] = None,
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
        self.norm_type, self.norm_eps = norm_type, norm_eps
        check_choice('ffn_type', ffn_type, FFN_TYPES)
        self.ffn_type = ffn_type
        self.ffn_hidden_rule = ffn_hidden_rule
        ffc = self.arch_settings.get('feedforward_channels') \
            if 'feedforward_channels' in self.OPTIONAL_KEYS else None
        if ffn_type == 'swiglu':
            self.ffn_hidden = swiglu_hidden_dim(
                self.embed_dims, rule=ffn_hidden_rule, ffn_channels=ffc)
        else:
            self.ffn_hidden = ffc or 4 * self.embed_dims

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=self.embed_dims,
            patch_size=patch_size,
            conv_name=self.PATCH_CONV)

        self.with_cls_token = with_cls_token
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        else:
            self.cls_token = None
        # leading non-patch tokens of the outputs, and of those the ones the
        # blocks leave unrotated
        self.num_extra_tokens = 1 if with_cls_token else 0
        self.cls_rope_pos = cls_rope_pos if with_cls_token else None
        self.num_prefix_tokens = self.num_extra_tokens \
            if self.cls_rope_pos is None else 0

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
        common = dict(
            dim=self.embed_dims,
            num_heads=self.num_heads,
            ffn_hidden=self.ffn_hidden,
            norm_eps=norm_eps,
            norm_type=norm_type,
            ffn_type=ffn_type,
            **(block_cfg or {}))
        dpr = self._drop_path_rates(drop_path_rate)
        layers = nn.ModuleList()
        for i in range(self.num_layers):
            cfg = dict(common, drop_path=dpr[i])
            cfg.update(layer_cfgs[i])  # per-block overrides
            layers.append(self._build_layer(i, cfg))
        self.add_module(self.LAYERS, layers)

        self.final_norm = final_norm
        if final_norm:
            self.add_module(self.NORMS[0],
                            build_norm(norm_type, self.embed_dims, norm_eps))
        self._build_head()

        self.with_cp = with_cp
        self._official_init()
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._drop_unused_keys)

    # ------------------------------------------------------------------
    # what subclasses state
    # ------------------------------------------------------------------
    def _drop_path_rates(self, rate: float) -> List[float]:
        """Stochastic depth per block: linear from 0 to ``rate``.

        Plain floats, so that construction works on the 'meta' device.
        """
        return [
            rate * i / max(self.num_layers - 1, 1)
            for i in range(self.num_layers)
        ]

    def _build_layer(self, index: int, cfg: dict) -> nn.Module:
        """Build block ``index`` from its keyword arguments ``cfg``."""
        raise NotImplementedError

    def _build_head(self) -> None:
        """Build what follows the final norm (pooling norm, classifier)."""

    # ------------------------------------------------------------------
    # initialisation, freezing, checkpoint loading
    # ------------------------------------------------------------------
    @property
    def layer_list(self) -> nn.ModuleList:
        """The blocks (named :attr:`LAYERS` in checkpoints)."""
        return getattr(self, self.LAYERS)

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] + list(
            self.layer_list[:self.frozen_stages])
        if self.frozen_stages >= self.num_layers:
            frozen += [
                getattr(self, name) for name in self.NORMS
                if hasattr(self, name)
            ]
        for m in frozen:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False
        if self.cls_token is not None:
            self.cls_token.requires_grad = False

    def train(self, mode: bool = True) -> 'PlainVisionLLaMABase':
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self

    def _drop_unused_keys(self, state_dict: dict, prefix: str, *args,
                          **kwargs) -> None:
        """Load pre-hook: drop ``pos_embed`` (and an unused class token).

        The official checkpoints carry a ``pos_embed`` that is never added
        (docs/visionllama.md#no-position-embedding), and MAE checkpoints a
        ``cls_token`` that downstream models without a class token do not
        use.
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
        self.with_cp = enable

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
            ``pos_embed`` and ``patch_embed.*`` get 0, block i gets i + 1,
            everything else (final norms, heads) num_layers + 1.
        """
        return plain_layer_depth(param_name, prefix, self.num_layers,
                                 self.LAYERS)

    # ------------------------------------------------------------------
    # forward pieces
    # ------------------------------------------------------------------
    def _rope_tables(self, height: int, width: int,
                     device: torch.device) -> Tables:
        """(cos, sin) of the H x W token grid, each (H * W, head_dim).

        Preceded by the class token's row when it is rotated
        (``cls_rope_pos``). Integer positions, scaled by the AS2DRoPE anchor
        if one is set; cached per (H, W, scale, device) by the RoPE module.
        """
        return self.rope.grid(
            height, width, device=device, cls_pos=self.cls_rope_pos)

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch-embed images and prepend the class token if any."""
        x, hw = self.patch_embed(x)
        if self.cls_token is None:
            return x, hw
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1), hw

    def _layer_kwargs(self, index: int, hw: Tuple[int, int],
                      rope: Tables) -> dict:
        """Keyword arguments of block ``index``."""
        return dict(rope=rope, num_prefix_tokens=self.num_prefix_tokens)

    def _run_layer(self, layer: nn.Module, x: Tensor, **kwargs) -> Tensor:
        """Call one block, with gradient checkpointing when enabled."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(layer, x, use_reentrant=False, **kwargs)
        return layer(x, **kwargs)

    def _forward_layers(self,
                        x: Tensor,
                        hw: Tuple[int, int],
                        rope: Optional[Tables] = None,
                        collect: bool = True) -> Tuple[Tensor, List[Tensor]]:
        """Run every block (and the final norm after the last).

        Args:
            x (Tensor): Tokens (B, N, C).
            hw (tuple[int, int]): Token grid (H, W).
            rope (tuple[Tensor, Tensor], optional): Tables for the tokens;
                None: :meth:`_rope_tables` of the grid.
            collect (bool): Collect the outputs of ``out_indices``.
                Defaults to True.

        Returns:
            tuple: The final tokens and the formatted outputs.
        """
        if rope is None:
            rope = self._rope_tables(hw[0], hw[1], x.device)
        outs = []
        last = self.num_layers - 1
        for i, layer in enumerate(self.layer_list):
            x = self._run_layer(layer, x, **self._layer_kwargs(i, hw, rope))
            if i == last and self.final_norm:
                x = getattr(self, self.NORMS[0])(x)
            if collect and i in self.out_indices:
                outs.append(self._output(i, x, hw))
        return x, outs

    def _output(self, index: int, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        """Output of block ``index`` (tokens ``x``) in ``out_type``."""
        return self._format_output(x, hw)

    def _format_output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patch_tokens = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            return tokens_to_featmap(patch_tokens, hw)
        return self._pool(patch_tokens)

    def _pool(self, patch_tokens: Tensor) -> Tensor:
        """``'avg_featmap'``: the mean patch token (B, C)."""
        return patch_tokens.mean(dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """All tokens (B, N(+1), C) after the blocks and the final norm."""
        x, hw = self._embed(x)
        x, _ = self._forward_layers(x, hw, collect=False)
        return x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return the outputs of the blocks in ``out_indices`` as a tuple."""
        x, hw = self._embed(x)
        _, outs = self._forward_layers(x, hw)
        return tuple(outs)

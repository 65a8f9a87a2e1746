"""Plain VisionLLaMA, deit style (supervised DeiT-III recipe).

The supervised plain models of the VisionLLaMA release (timm names
``vit_llama_rope_{small,base,large}_patch16`` and
``vit_llama_rope_large_as_patch16``;
docs/visionllama.md#plain-model-deit-style). They differ from the
mmpretrain-style :class:`~visionllama_mm.backbones.VisionLLaMA`:

* SwiGLU ``mlp.{c_fc1, c_fc2, c_proj}`` without biases and the LLaMA width
  ``ceil256(8 C / 3)``;
* layer scale ``gamma_1`` / ``gamma_2`` initialised to 1e-4;
* a class token prepended before the blocks and rotated at the official
  position (flat index -1 of the grid, i.e. (W - 1, -1));
* DropPath on both branches with the same rate in every block;
* output ``norm(x)[:, 0]`` followed by ``head``;
* timm initialisation and timm attribute names (``patch_embed.proj``,
  ``blocks.i.*``, ``cls_token``, ``norm``, ``head``), so upstream deit
  checkpoints load directly.

The class is also an mmpretrain-style backbone (``out_type``,
``out_indices``, ``frozen_stages``, ``get_layer_depth``); for a timm-like
classifier set ``num_classes`` and call
``model.forward_head(model.forward_features(x))``.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from visionllama_mm.layers import (FFN_TYPES, LayerScaleBlock,
                                   RotaryEmbedding2D, build_norm,
                                   init_linear_norm_timm, swiglu_hidden_dim)
from visionllama_mm.registry import MODELS
from visionllama_mm.utils import check_choice, check_positive_int
from .vision_llama import (check_image_input, parse_arch, parse_out_indices,
                           plain_layer_depth, tokens_to_featmap)

__all__ = ['DeiTPatchEmbed', 'VisionLLaMADeiT']

Tables = Tuple[Tensor, Tensor]


class DeiTPatchEmbed(nn.Module):
    """timm-style patch embedding (attribute ``proj``), no padding.

    Args:
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int): Token width. Defaults to 768.
        patch_size (int): Patch size. Defaults to 16.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 768,
                 patch_size: int = 16) -> None:
        super().__init__()
        check_positive_int('in_channels', in_channels)
        check_positive_int('patch_size', patch_size)
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.proj = nn.Conv2d(
            in_channels, embed_dims, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, C, H, W) -> tokens (B, N, embed_dims) and the token grid."""
        check_image_input(x, self.in_channels, self.patch_size)
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


@MODELS.register_module()
class VisionLLaMADeiT(BaseModule):
    """Plain VisionLLaMA of the deit (DeiT-III) recipe.

    Args:
        arch (str | dict): ``'s'``/``'small'`` (384-d, 12 blocks, 6 heads),
            ``'b'``/``'base'`` (768, 12, 12) or ``'l'``/``'large'``
            (1024, 24, 16); or a dict with ``embed_dims``, ``num_layers`` and
            ``num_heads``. Defaults to ``'base'``.
        img_size (int): The usual input size (reference only; RoPE follows
            the runtime size). Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        num_classes (int): Classes of the built-in ``head``; 0 makes
            ``head`` an identity (backbone use). Defaults to 0.
        out_type (str): ``'cls_token'`` (``norm(x)[:, 0]``), ``'raw'``
            (all tokens), ``'featmap'`` (patch tokens as (B, C, H, W)) or
            ``'avg_featmap'`` (mean patch token). Defaults to
            ``'cls_token'``.
        out_indices (int | Sequence[int]): Blocks whose outputs are
            returned. Defaults to -1.
        final_norm (bool): Apply ``norm`` after the last block. Defaults to
            True.
        drop_path_rate (float): DropPath rate of every block (uniform, on
            both branches, as upstream). Defaults to 0.
        layer_scale (float, optional): Initial layer-scale value; None
            removes ``gamma_1/2``. Defaults to 1e-4.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        norm_eps (float): Norm eps. Defaults to 1e-6.
        norm_type (str): ``'LN'`` (official) or ``'RMSNorm'`` (the paper's
            norm ablation) for every norm. Defaults to ``'LN'``.
        ffn_type (str): ``'swiglu'`` (official, LLaMA width) or ``'mlp'``
            (the ViT GELU MLP of width 4 C, the FFN ablation). Defaults to
            ``'swiglu'``.
        cls_rope_pos (str | float, optional): RoPE position of the class
            token:

            - ``'official'``: flat index -1 of the grid, (W - 1, -1);
            - ``None``: the class token is not rotated (timm prefix skip);
            - a number c: position (c, c).

            Defaults to ``'official'``.
        as_anchor (float, optional): AS2DRoPE anchor in tokens; all
            coordinates (class token included) are scaled by
            ``as_anchor / H_tokens``. The upstream ``*_as_*`` model is
            ``as_anchor=14`` at patch 16 (``s = 224 / H_pixels``). Defaults
            to None (no scaling).
        anchor_mode (str): ``'height'`` (official) or ``'per_axis'``.
            Defaults to ``'height'``.
        rope_base (float): RoPE base. Defaults to 10000.
        rope_cfg (dict, optional): Extra :class:`~visionllama_mm.layers.
            rope.RotaryEmbedding2D` options for the paper's position
            ablations: ``mode`` (``'2d'`` official, ``'1d'`` raster,
            ``'mixed'`` learnable RoPE-Mixed), ``ratio`` (partial RoPE),
            ``per_head`` (frequencies per head), ``ntk_alpha`` (NTK-aware
            base). None keeps the official 2D RoPE. Defaults to None.
        frozen_stages (int): Freeze the patch embedding, the class token and
            the first ``frozen_stages`` blocks (``norm`` too when all are
            frozen). Defaults to -1.
        with_cp (bool): Gradient checkpointing. Defaults to False.
        init_cfg (dict | list[dict], optional): mmengine init config.
            Defaults to None.
    """
    arch_zoo = {
        **dict.fromkeys(['s', 'small'],
                        dict(embed_dims=384, num_layers=12, num_heads=6)),
        **dict.fromkeys(['b', 'base'],
                        dict(embed_dims=768, num_layers=12, num_heads=12)),
        **dict.fromkeys(['l', 'large'],
                        dict(embed_dims=1024, num_layers=24, num_heads=16)),
    }
    ESSENTIAL_KEYS = ('embed_dims', 'num_layers', 'num_heads')
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    num_extra_tokens = 1

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 num_classes: int = 0,
                 out_type: str = 'cls_token',
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 drop_path_rate: float = 0.,
                 layer_scale: Optional[float] = 1e-4,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 norm_type: str = 'LN',
                 ffn_type: str = 'swiglu',
                 cls_rope_pos: Union[None, str, float] = 'official',
                 as_anchor: Optional[float] = None,
                 anchor_mode: str = 'height',
                 rope_base: float = 10000.,
                 rope_cfg: Optional[dict] = None,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
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
        check_choice('out_type', out_type, self.OUT_TYPES)
        if not (cls_rope_pos is None or cls_rope_pos == 'official' or
                (isinstance(cls_rope_pos, (int, float))
                 and not isinstance(cls_rope_pos, bool))):
            raise ValueError("cls_rope_pos must be 'official', None or a "
                             f'number, got {cls_rope_pos!r}')
        self.out_type = out_type
        self.img_size = img_size
        self.patch_size = patch_size
        self.cls_rope_pos = cls_rope_pos
        self.as_anchor = as_anchor
        check_choice('ffn_type', ffn_type, FFN_TYPES)
        self.ffn_type = ffn_type
        self.ffn_hidden = swiglu_hidden_dim(
            self.embed_dims,
            rule='llama') if ffn_type == 'swiglu' else 4 * self.embed_dims

        self.patch_embed = DeiTPatchEmbed(in_channels, self.embed_dims,
                                          patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.rope = RotaryEmbedding2D(
            self.embed_dims // self.num_heads,
            base=rope_base,
            anchor=as_anchor,
            anchor_mode=anchor_mode,
            **dict(dict(num_heads=self.num_heads), **(rope_cfg or {})))
        self.out_indices = parse_out_indices(out_indices, self.num_layers)
        self.blocks = nn.ModuleList([
            LayerScaleBlock(
                self.embed_dims,
                self.num_heads,
                self.ffn_hidden,
                qkv_bias=qkv_bias,
                mlp_bias=False,
                drop_path=drop_path_rate,
                layer_scale=layer_scale,
                norm_eps=norm_eps,
                norm_type=norm_type,
                ffn_type=ffn_type) for _ in range(self.num_layers)
        ])
        self.final_norm = final_norm
        self.norm = build_norm(norm_type, self.embed_dims,
                               norm_eps) if final_norm else nn.Identity()
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dims, num_classes) \
            if num_classes > 0 else nn.Identity()

        self.grad_checkpointing = with_cp
        self._init_timm()
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._drop_unused_keys)

    # ------------------------------------------------------------------
    def _init_timm(self) -> None:
        """timm init: Linear trunc_normal(0.02) / bias 0, LN 1 / 0."""
        for m in self.modules():
            init_linear_norm_timm(m)
        nn.init.trunc_normal_(self.cls_token, std=.02)

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'
        if not pretrained and not self.init_cfg:
            self._init_timm()

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] + list(self.blocks[:self.frozen_stages])
        if self.frozen_stages >= self.num_layers:
            frozen.append(self.norm)
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        self.cls_token.requires_grad = False

    def train(self, mode: bool = True) -> 'VisionLLaMADeiT':
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self

    def _drop_unused_keys(self, state_dict: dict, prefix: str, *args,
                          **kwargs) -> None:
        """Load pre-hook: drop a ``pos_embed`` entry (never used)."""
        key = prefix + 'pos_embed'
        if key in state_dict:
            del state_dict[key]
            print_log(
                f'{type(self).__name__}: dropped unused checkpoint entry '
                f'{key}',
                logger='current',
                level=10)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient checkpointing of the blocks on or off."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set:
        """Parameter names that should not be weight-decayed."""
        return {'cls_token'}

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
        """Layer-wise depth for LR decay: stem 0, ``blocks.i`` i + 1, rest
        ``num_layers + 1``; returns (depth, num_layers + 2)."""
        return plain_layer_depth(param_name, prefix, self.num_layers, 'blocks')

    # ------------------------------------------------------------------
    def _rope_tables(self, height: int, width: int,
                     device: torch.device) -> Tables:
        """Tables of the class token (if rotated) and the H x W grid."""
        return self.rope.grid(
            height, width, device=device, cls_pos=self.cls_rope_pos)

    def _embed(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        x, hw = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1), hw

    def _run_layer(self, layer: nn.Module, x: Tensor, **kwargs) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, x, use_reentrant=False, **kwargs)
        return layer(x, **kwargs)

    def _forward_layers(self, x: Tensor,
                        hw: Tuple[int, int]) -> Tuple[Tensor, List[Tensor]]:
        rope = self._rope_tables(hw[0], hw[1], x.device)
        prefix = 0 if self.cls_rope_pos is not None else 1
        outs = []
        for i, blk in enumerate(self.blocks):
            x = self._run_layer(blk, x, rope=rope, num_prefix_tokens=prefix)
            if i == self.num_layers - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw))
        return x, outs

    def _format_output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patch_tokens = x[:, 1:]
        if self.out_type == 'featmap':
            return tokens_to_featmap(patch_tokens, hw)
        return patch_tokens.mean(dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """All tokens (B, 1 + N, C) after the blocks and ``norm``."""
        x, hw = self._embed(x)
        x, _ = self._forward_layers(x, hw)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Class-token logits from :meth:`forward_features` tokens."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Outputs of the blocks in ``out_indices`` (mmpretrain face)."""
        x, hw = self._embed(x)
        _, outs = self._forward_layers(x, hw)
        return tuple(outs)

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
from typing import List, Optional, Union

import torch.nn as nn
from torch import Tensor

from visionllama_mm.layers import LayerScaleBlock, init_linear_norm_timm
from visionllama_mm.layers.patch_embed import PatchEmbed
from visionllama_mm.registry import MODELS
from .base import PlainVisionLLaMABase

__all__ = ['DeiTPatchEmbed', 'VisionLLaMADeiT']


class DeiTPatchEmbed(PatchEmbed):
    """timm-style patch embedding (attribute ``proj``), no padding.

    :class:`~visionllama_mm.layers.patch_embed.PatchEmbed` with timm's
    name, kept for its positional signature.

    Args:
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int): Token width. Defaults to 768.
        patch_size (int): Patch size. Defaults to 16.
    """

    def __init__(self,
                 in_channels: int = 3,
                 embed_dims: int = 768,
                 patch_size: int = 16) -> None:
        super().__init__(in_channels, embed_dims, patch_size, conv_name='proj')


@MODELS.register_module()
class VisionLLaMADeiT(PlainVisionLLaMABase):
    """Plain VisionLLaMA of the deit (DeiT-III) recipe.

    Args:
        arch (str | dict): ``'s'``/``'small'`` (384-d, 12 blocks, 6 heads),
            ``'b'``/``'base'`` (768, 12, 12) or ``'l'``/``'large'``
            (1024, 24, 16); or a dict with ``embed_dims``, ``num_layers`` and
            ``num_heads``. Defaults to ``'base'``.
        num_classes (int): Classes of the built-in ``head``; 0 makes
            ``head`` an identity (backbone use). Defaults to 0.
        out_type (str): ``'cls_token'`` (``norm(x)[:, 0]``), ``'raw'``
            (all tokens), ``'featmap'`` (patch tokens as (B, C, H, W)) or
            ``'avg_featmap'`` (mean patch token). Defaults to
            ``'cls_token'``.
        drop_path_rate (float): DropPath rate of every block (uniform, on
            both branches, as upstream). Defaults to 0.
        layer_scale (float, optional): Initial layer-scale value; None
            removes ``gamma_1/2``. Defaults to 1e-4.
        ffn_type (str): ``'swiglu'`` (official, LLaMA width) or ``'mlp'``
            (the ViT GELU MLP of width 4 C, the FFN ablation). Defaults to
            ``'swiglu'``.
        cls_rope_pos (str | float, optional): RoPE position of the class
            token:

            - ``'official'``: flat index -1 of the grid, (W - 1, -1);
            - ``None``: the class token is not rotated (timm prefix skip);
            - a number c: position (c, c).

            Defaults to ``'official'``.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        **kwargs: Further arguments of
            :class:`~visionllama_mm.backbones.base.PlainVisionLLaMABase`
            (``img_size``, ``patch_size``, ``in_channels``, ``out_indices``,
            ``final_norm`` (``norm``), ``norm_type``, ``norm_eps``,
            ``frozen_stages`` (``norm`` too when all blocks are frozen),
            RoPE options, ``with_cp``, ``init_cfg`` (it replaces the timm
            init)). ``as_anchor`` scales all coordinates, class token
            included, by ``as_anchor / H_tokens``: the upstream ``*_as_*``
            model is ``as_anchor=14`` at patch 16 (``s = 224 / H_pixels``).
    """
    arch_zoo = {
        **dict.fromkeys(['s', 'small'],
                        dict(embed_dims=384, num_layers=12, num_heads=6)),
        **dict.fromkeys(['b', 'base'],
                        dict(embed_dims=768, num_layers=12, num_heads=12)),
        **dict.fromkeys(['l', 'large'],
                        dict(embed_dims=1024, num_layers=24, num_heads=16)),
    }
    LAYERS = 'blocks'
    NORMS = ('norm', )
    PATCH_CONV = 'proj'

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 num_classes: int = 0,
                 out_type: str = 'cls_token',
                 drop_path_rate: float = 0.,
                 layer_scale: Optional[float] = 1e-4,
                 ffn_type: str = 'swiglu',
                 cls_rope_pos: Union[None, str, float] = 'official',
                 qkv_bias: bool = True,
                 **kwargs) -> None:
        if not (cls_rope_pos is None or cls_rope_pos == 'official' or
                (isinstance(cls_rope_pos, (int, float))
                 and not isinstance(cls_rope_pos, bool))):
            raise ValueError("cls_rope_pos must be 'official', None or a "
                             f'number, got {cls_rope_pos!r}')
        # _build_head (called by the base constructor) reads it
        self.num_classes = num_classes
        super().__init__(
            arch,
            out_type=out_type,
            drop_path_rate=drop_path_rate,
            ffn_type=ffn_type,
            ffn_hidden_rule='llama',
            with_cls_token=True,
            cls_rope_pos=cls_rope_pos,
            block_cfg=dict(
                qkv_bias=qkv_bias, mlp_bias=False, layer_scale=layer_scale),
            **kwargs)

    def _drop_path_rates(self, rate: float) -> List[float]:
        """The same rate in every block (upstream)."""
        return [rate] * self.num_layers

    def _build_layer(self, index: int, cfg: dict) -> nn.Module:
        """Block ``index``: a :class:`LayerScaleBlock` of ``cfg``."""
        return LayerScaleBlock(**cfg)

    def _build_head(self) -> None:
        self.head = nn.Linear(self.embed_dims, self.num_classes) \
            if self.num_classes > 0 else nn.Identity()

    def _official_init(self) -> None:
        """timm init: Linear trunc_normal(0.02) / bias 0, LN 1 / 0."""
        for m in self.modules():
            init_linear_norm_timm(m)
        nn.init.trunc_normal_(self.cls_token, std=.02)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Class-token logits from :meth:`forward_features` tokens."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

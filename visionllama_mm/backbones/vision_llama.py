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

What the plain family shares (the block loop, output formats, freezing,
checkpoint hooks, the init rule) lives in
:class:`~visionllama_mm.backbones.base.PlainVisionLLaMABase`; this class
states the mmpretrain layout (``layers``, ``ln1`` / ``ln2``,
``patch_embed.projection``) and builds :class:`VisionLLaMABlock` blocks.
"""
from typing import Dict, Union

import torch.nn as nn
from torch import Tensor

from visionllama_mm.layers import VisionLLaMABlock, build_norm
from visionllama_mm.layers.patch_embed import PatchEmbed
from visionllama_mm.registry import MODELS
from .base import PlainVisionLLaMABase, parse_norm_cfg

__all__ = ['PatchEmbed', 'VisionLLaMA']


def _arch_entry(embed_dims: int, num_layers: int, num_heads: int,
                feedforward_channels: int) -> Dict[str, int]:
    return dict(
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=num_heads,
        feedforward_channels=feedforward_channels)


@MODELS.register_module()
class VisionLLaMA(PlainVisionLLaMABase):
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
        qkv_bias (bool): Bias of the qkv projections. Defaults to True.
        norm_cfg (dict): Norm layers: ``dict(type='LN', eps=...)`` (the
            official models use LayerNorm everywhere) or
            ``dict(type='RMSNorm', eps=...)`` (the paper's norm ablation).
            Defaults to ``dict(type='LN', eps=1e-6)``.
        ffn_drop_path (bool): Also apply DropPath to the FFN branch. The
            official blocks apply it to the attention branch only. Defaults
            to False.
        **kwargs: The arguments of
            :class:`~visionllama_mm.backbones.base.PlainVisionLLaMABase`
            (``img_size``, ``patch_size``, ``out_type``, ``out_indices``,
            ``with_cls_token``, ``final_norm``, ``ffn_hidden_rule``,
            ``ffn_type``, ``drop_path_rate``, ``frozen_stages``, RoPE
            options, ``with_cp``, ``layer_cfgs``, ``init_cfg``). Here
            ``final_norm`` is ``ln1`` and ``out_type='avg_featmap'`` returns
            ``ln2`` of the mean patch token.
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
    OPTIONAL_KEYS = ('feedforward_channels', )
    LAYERS = 'layers'
    NORMS = ('ln1', 'ln2')
    PATCH_CONV = 'projection'

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 ffn_drop_path: bool = False,
                 **kwargs) -> None:
        norm_type, norm_eps = parse_norm_cfg(norm_cfg)
        super().__init__(
            arch,
            norm_type=norm_type,
            norm_eps=norm_eps,
            block_cfg=dict(qkv_bias=qkv_bias, ffn_drop_path=ffn_drop_path),
            **kwargs)
        self.qkv_bias = qkv_bias
        self.ffn_drop_path = ffn_drop_path

    def _build_layer(self, index: int, cfg: dict) -> nn.Module:
        """Block ``index``: a :class:`VisionLLaMABlock` of ``cfg``."""
        return VisionLLaMABlock(**cfg)

    def _build_head(self) -> None:
        if self.out_type == 'avg_featmap':
            self.ln2 = build_norm(self.norm_type, self.embed_dims,
                                  self.norm_eps)

    def _pool(self, patch_tokens: Tensor) -> Tensor:
        """``'avg_featmap'``: ``ln2`` of the mean patch token (B, C)."""
        return self.ln2(patch_tokens.mean(dim=1))

    def _official_init(self) -> None:
        """Official init (docs/visionllama.md#plain-initialisation): FFN
        xavier-uniform, bias N(0, 1e-6).

        The other Linear layers keep the PyTorch default; the class token is
        N(0, 0.02).
        """
        for layer in self.layers:
            for m in layer.ffn.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.normal_(m.bias, std=1e-6)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    @property
    def checkpoint_new_keys(self) -> tuple:
        """Tensors a pretrained checkpoint need not fill (fnmatch patterns).

        ``ln2``, the norm after average pooling, is new when a fine-tune
        starts from MAE weights (which have none); see
        :mod:`visionllama_mm.weights`.
        """
        return ('ln2.*', ) if self.out_type == 'avg_featmap' else ()

"""Visual side of LLaMA-Adapter V2: the frozen CLIP encoder and the bridge
blocks (docs/llama_adapter_v2.md#visual-path).

The CLIP encoder returns the features of **all** tokens (class token and
patches) after the final LayerNorm (``ln_post``) and the 1024 -> 768
projection. Two back-ends give exactly this:

* ``'hf'``: transformers' ``CLIPVisionModelWithProjection`` from a local
  directory (or a config for random init). transformers applies
  ``post_layernorm`` to the pooled token only, so it is applied here to every
  token of ``last_hidden_state``.
* ``'mmpretrain'``: mmpretrain's ``VisionTransformer`` with
  ``final_norm=True``, ``out_type='raw'`` plus a bias-free projection, with
  weights from an mmpretrain CLIP checkpoint.
"""
import os.path as osp
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from visionllama_mm.utils import check_choice

__all__ = [
    'VisualBlock', 'CLIPVisionEncoder', 'build_clip_encoder',
    'CLIP_VIT_L14_CONFIG'
]

#: CLIP ViT-L/14 vision tower (transformers ``CLIPVisionConfig`` arguments),
#: the encoder of the released LLaMA-Adapter V2 files.
CLIP_VIT_L14_CONFIG = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act='quick_gelu')


class VisualAttention(nn.Module):
    """Multi-head self-attention of the bridge blocks (timm 0.3.2 names).

    Args:
        dim (int): Width.
        num_heads (int): Number of heads (scale ``head_dim ** -0.5``).
        fused_attn (bool): Use SDPA. Defaults to True.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 fused_attn: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by '
                             f'num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class VisualMlp(nn.Module):
    """``fc1`` -> exact GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisualBlock(nn.Module):
    """Pre-norm ViT block of the bridge (timm 0.3.2 ``Block``;
    docs/llama_adapter_v2.md#visual-path).

    ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``, LayerNorm eps 1e-5, no
    dropout or drop path, PyTorch default initialisation.

    Args:
        dim (int): Width. The released model uses 768.
        num_heads (int): Number of heads. The released model uses 16.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.0.
        fused_attn (bool): Use SDPA. Defaults to True.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 4.0,
                 fused_attn: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VisualAttention(dim, num_heads, fused_attn=fused_attn)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = VisualMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionEncoder(nn.Module):
    """Frozen CLIP image tower returning projected features of all tokens.

    Args:
        backbone (nn.Module): transformers ``CLIPVisionModelWithProjection``
            or mmpretrain ``VisionTransformer``.
        projection (nn.Module, optional): Bias-free projection for the
            mmpretrain back-end. Defaults to None.
        source (str): ``'hf'`` or ``'mmpretrain'``.
    """

    def __init__(self,
                 backbone: nn.Module,
                 projection: Optional[nn.Module] = None,
                 source: str = 'hf') -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection
        self.source = source
        if source == 'hf':
            self.out_channels = backbone.config.projection_dim
            self.image_size = backbone.config.image_size
        else:
            self.out_channels = projection.out_features
            self.image_size = backbone.img_size[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1 + N, out_channels)."""
        if self.source == 'hf':
            vision = self.backbone.vision_model
            hidden = vision(pixel_values=images).last_hidden_state
            return self.backbone.visual_projection(
                vision.post_layernorm(hidden))
        return self.projection(self.backbone(images)[-1])


def _build_hf_clip(name_or_path: Optional[str], config: Optional[dict],
                   load_pretrained: bool, dtype: torch.dtype) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    if name_or_path is not None:
        if not osp.isdir(name_or_path):
            raise FileNotFoundError(
                f'CLIP directory {name_or_path!r} does not exist (expected '
                'a local transformers CLIP directory, e.g. a copy of '
                'openai/clip-vit-large-patch14)')
        if load_pretrained:
            return CLIPVisionModelWithProjection.from_pretrained(
                name_or_path, torch_dtype=dtype)
        cfg = CLIPVisionConfig.from_pretrained(name_or_path)
    elif config is not None:
        cfg = CLIPVisionConfig(**config)
    else:
        raise ValueError('vision_encoder needs `name_or_path` or `config`')
    return CLIPVisionModelWithProjection(cfg).to(dtype)


def _build_mmpretrain_clip(backbone: dict, out_channels: int,
                           pretrained: Optional[str]) -> CLIPVisionEncoder:
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    cfg = dict(backbone)
    cfg.setdefault('type', 'mmpretrain.VisionTransformer')
    vit = MMPRETRAIN_MODELS.build(cfg)
    if not getattr(vit, 'final_norm', True) or vit.out_type != 'raw':
        raise ValueError("LLaMA-Adapter V2 needs the CLIP ViT with "
                         "final_norm=True and out_type='raw' "
                         "(docs/llama_adapter_v2.md#visual-path)")
    proj = nn.Linear(vit.embed_dims, out_channels, bias=False)
    if pretrained is not None:
        from visionllama_mm.multimodal.llama_adapter_v2.checkpoint import \
            load_mmpretrain_clip
        load_mmpretrain_clip(vit, proj, pretrained)
    return CLIPVisionEncoder(vit, proj, source='mmpretrain')


def build_clip_encoder(cfg: dict) -> CLIPVisionEncoder:
    """Build the frozen CLIP encoder from a config dict.

    Args:
        cfg (dict): One of

            - ``dict(type='hf', name_or_path=DIR, load_pretrained=True,
              dtype='float32')``: transformers CLIP from a local directory;
            - ``dict(type='hf', config=dict(...))``: random init from
              ``CLIPVisionConfig`` arguments (tests);
            - ``dict(type='mmpretrain', backbone=dict(arch='l', ...),
              out_channels=768, pretrained=PATH)``: mmpretrain ViT plus
              projection.

    Returns:
        CLIPVisionEncoder: The encoder, in eval mode, frozen.
    """
    cfg = dict(cfg)
    kind = cfg.pop('type', 'hf')
    dtype = _dtype(cfg.pop('dtype', 'float32'))
    if kind == 'hf':
        model = _build_hf_clip(
            cfg.pop('name_or_path', None), cfg.pop('config', None),
            cfg.pop('load_pretrained', True), dtype)
        encoder = CLIPVisionEncoder(model, source='hf')
    elif kind == 'mmpretrain':
        encoder = _build_mmpretrain_clip(
            cfg.pop('backbone'), cfg.pop('out_channels', 768),
            cfg.pop('pretrained', None))
        encoder.to(dtype)
    else:
        raise ValueError("vision_encoder type must be 'hf' or 'mmpretrain', "
                         f'got {kind!r}')
    if cfg:
        raise ValueError(f'unknown vision_encoder keys: {sorted(cfg)}')
    encoder.requires_grad_(False)
    return encoder.eval()


def _dtype(name) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    allowed = dict(
        float32=torch.float32,
        fp32=torch.float32,
        float16=torch.float16,
        fp16=torch.float16,
        bfloat16=torch.bfloat16,
        bf16=torch.bfloat16)
    check_choice('dtype', name, sorted(allowed))
    return allowed[name]

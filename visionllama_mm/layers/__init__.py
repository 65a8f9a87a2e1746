"""Pure-torch building blocks shared by every VisionLLaMA model."""
from .attention import (RoPEAttention, head_dim_of, scaled_dot_product,
                        use_fused_attn)
from .blocks import (DropPath, LayerScaleBlock, VisionLLaMABlock,
                     init_linear_norm_timm)
from .norm_mlp import FFN_TYPES, NORM_TYPES, Mlp, build_ffn, build_norm
from .patch_embed import PatchEmbed, tokens_to_featmap
from .rope import (RotaryEmbedding2D, anchor_scale, apply_rope,
                   cls_token_coords, gather_tables, grid_coords,
                   gsa_key_coords, rope_frequencies)
from .swiglu import FFN_HIDDEN_RULES, SwiGLU, silu_gate, swiglu_hidden_dim

__all__ = [
    'RoPEAttention', 'head_dim_of', 'scaled_dot_product', 'use_fused_attn',
    'DropPath', 'LayerScaleBlock', 'VisionLLaMABlock', 'init_linear_norm_timm',
    'RotaryEmbedding2D', 'anchor_scale', 'apply_rope', 'cls_token_coords',
    'gather_tables', 'grid_coords', 'gsa_key_coords', 'rope_frequencies',
    'FFN_HIDDEN_RULES', 'SwiGLU', 'silu_gate', 'swiglu_hidden_dim',
    'FFN_TYPES', 'NORM_TYPES', 'Mlp', 'build_ffn', 'build_norm', 'PatchEmbed',
    'tokens_to_featmap'
]

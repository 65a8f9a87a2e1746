"""Tiny LLaMA-Adapter V2 builders shared by the multimodal tests."""
import torch

TINY_LLAMA = dict(dim=64, n_layers=3, n_heads=4, multiple_of=16, norm_eps=1e-6)
TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=16,
    projection_dim=24,
    hidden_act='quick_gelu')
TINY_BRIDGE = dict(
    query_len=4, query_layer=2, v_embed_dim=16, v_depth=2, v_num_heads=2)
VOCAB = 97


def tiny_model_cfg(vocab=VOCAB, **kwargs):
    """Config dict of a tiny random LLaMAAdapterV2 (no tokenizer)."""
    cfg = dict(
        type='visionllama_mm.LLaMAAdapterV2',
        llm=dict(params=dict(TINY_LLAMA, vocab_size=vocab)),
        vision_encoder=dict(type='hf', config=dict(TINY_CLIP)),
        tokenizer=None,
        **TINY_BRIDGE)
    cfg.update(kwargs)
    return cfg


def build_tiny(seed=0, **kwargs):
    from visionllama_mm.multimodal import LLaMAAdapterV2
    torch.manual_seed(seed)
    cfg = tiny_model_cfg(**kwargs)
    cfg.pop('type')
    return LLaMAAdapterV2(**cfg)


def randomize_adapters(model, seed=1, base_gain=5.0):
    """Give every adapter-side tensor a non-trivial value and scale up the
    frozen LLaMA (transformers' 0.02 init gives near-zero logits), so that
    the numerical tests see O(1) logits and O(1) adapter effects."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if model.param_side(name) is None:
                if name.startswith('llama.') and p.dim() == 2:
                    p.mul_(base_gain)
                continue
            noise = torch.randn(p.shape, generator=g)
            if name.endswith('.scale'):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith(('gate', 'new_gate')):
                p.copy_(noise)
            else:
                p.copy_(0.2 * noise)
    return model

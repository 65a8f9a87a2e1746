"""Token sampling of LLaMA-Adapter V2 (docs/llama_adapter_v2.md#generation)."""
from typing import Optional

import torch

__all__ = ['sample_top_p', 'sample_next_token', 'GENERATION_DEFAULTS']

#: Official defaults (``max_gen_len=256``, ``temperature=0.1``,
#: ``top_p=0.75``); ``temperature=0`` is greedy decoding.
GENERATION_DEFAULTS = dict(max_new_tokens=256, temperature=0.1, top_p=0.75)


def sample_top_p(probs: torch.Tensor,
                 top_p: float,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Nucleus sampling as in the released code.

    Sort the probabilities in descending order, drop every entry whose
    *exclusive* cumulative mass exceeds ``top_p``, renormalise and draw.

    Args:
        probs (torch.Tensor): (B, V) probabilities.
        top_p (float): Nucleus mass.
        generator (torch.Generator, optional): RNG. Defaults to None.

    Returns:
        torch.Tensor: (B,) token ids.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before > top_p, 0.0)
    sorted_probs = sorted_probs / sorted_probs.sum(dim=-1, keepdim=True)
    pick = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, pick).squeeze(-1)


def sample_next_token(logits: torch.Tensor,
                      temperature: float,
                      top_p: float,
                      generator: Optional[torch.Generator] = None
                      ) -> torch.Tensor:
    """Greedy (``temperature <= 0``) or temperature + top-p sampling.

    Args:
        logits (torch.Tensor): (B, V) logits of the last position.
        temperature (float): Softmax temperature.
        top_p (float): Nucleus mass.
        generator (torch.Generator, optional): RNG. Defaults to None.

    Returns:
        torch.Tensor: (B,) token ids.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return sample_top_p(probs, top_p, generator)

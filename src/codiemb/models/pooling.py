"""Token pooling: turn ``[batch, seq, dim]`` hidden states into one vector per text.

All modes are correct for both right and left padding (decoder models pad on the left).
"""

from __future__ import annotations

import torch

POOLING_MODES = ("mean", "cls", "last_token", "weighted_mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "cls":
        # First attended token, so a left-padded batch still picks the real first token.
        first = attention_mask.int().argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), first]
    if mode == "last_token":
        # Last attended token for either padding side.
        last = attention_mask.size(1) - 1 - attention_mask.flip(1).int().argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    if mode == "weighted_mean":
        # SGPT position weights 1..n counted from each text's first real token, so the result does
        # not depend on how much padding the batch needed.
        weights = (attention_mask.cumsum(1) * attention_mask).to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {POOLING_MODES}")


# Modes that average over tokens: only these leave the prompt out when ``pool_prompt`` is off (the official
# CoDiEmb code masks the instruction for 'mean' / 'weightedmean'; CLS and last-token pooling are unaffected).
PROMPT_AWARE_MODES = ("mean", "weighted_mean")


def exclude_prompt(attention_mask: torch.Tensor, prompt_length: torch.Tensor) -> torch.Tensor:
    """The attention mask without each row's first ``prompt_length[i]`` attended tokens (either padding side).

    A row whose prompt covers every attended token (truncated text) keeps its full mask rather than averaging
    nothing (the official code divides by zero there; sentence-transformers returns a zero vector).
    """
    attended = attention_mask.bool()
    position = attended.long().cumsum(1)  # 1, 2, ... over attended tokens, counted from the first one
    text = attended & (position > prompt_length.to(position.device).long().view(-1, 1))
    empty = ~text.any(dim=1, keepdim=True)
    return torch.where(empty, attended, text).to(attention_mask.dtype)

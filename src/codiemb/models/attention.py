"""Bidirectional attention for decoder backbones (``model.bidirectional``): the causal mask replaced by a
padding-only one, as the CoDiEmb release does for its decoders (``--attn bbcc``)."""

from __future__ import annotations

import torch

from codiemb.errors import ConfigError

# Decoders whose transformers implementation takes a ready 4D attention mask as-is (masking_utils), so the
# causal mask can be replaced by a padding-only one. Tested: qwen3, llama (tests/ecosystem/test_model_configs.py).
BIDIRECTIONAL_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")


def check_bidirectional_support(config) -> None:
    model_type = getattr(config, "model_type", "")
    if model_type not in BIDIRECTIONAL_MODEL_TYPES:
        why = ("it is an encoder and attends both ways already" if not getattr(config, "is_decoder", False)
               and "bert" in model_type else "its attention mask cannot be replaced from outside")
        raise ConfigError(f"model.bidirectional is not offered for {model_type!r}: {why}; "
                          f"supported: {list(BIDIRECTIONAL_MODEL_TYPES)}")
    if (getattr(config, "_attn_implementation", None) or "sdpa") not in ("sdpa", "eager"):
        raise ConfigError("model.bidirectional needs attn_implementation sdpa or eager (flash attention is causal)")


def bidirectional_attention_mask(attention_mask: torch.Tensor, config) -> torch.Tensor:
    """A ``[batch, 1, seq, seq]`` mask: every real token attends to every real token (no causal triangle).

    Padding *queries* attend to everything: a fully masked row gives NaN in SDPA, and NaN values at padding
    positions would leak through ``0 * NaN``. Their outputs are never pooled. Boolean for SDPA (True = attend),
    additive float for eager attention.
    """
    keys = attention_mask.bool()[:, None, None, :]
    allowed = keys | ~attention_mask.bool()[:, None, :, None]
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        dtype = config.dtype if isinstance(getattr(config, "dtype", None), torch.dtype) else torch.float32
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                           torch.finfo(dtype).min)
    return allowed

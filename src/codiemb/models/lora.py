"""Parameter-efficient training with LoRA (Hu et al. 2021, arXiv 2106.09685) through ``peft``.

A LoRA layer replaces ``W x`` by ``W x + (alpha / r) * B A x`` with ``A`` (r x d_in, random) and ``B``
(d_out x r, zeros), so training starts exactly at the base model and only ``A``, ``B`` are trained.
Exports are always *merged* (``W <- W + (alpha / r) B A``, a plain backbone with the base model's tensor
names), so ``SentenceTransformer(dir)``, ``AutoModel`` and the merge stage never see adapter tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from codiemb.errors import ConfigError

# Keys of the `model.lora` config node; `enabled: false` (the default) leaves the backbone untouched.
LORA_KEYS = ("enabled", "r", "alpha", "dropout", "target_modules", "modules_to_save")


def lora_enabled(options: Mapping[str, Any] | None) -> bool:
    return bool(options) and bool(options.get("enabled", False))


def apply_lora(backbone: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """Wrap ``backbone`` in a ``peft`` LoRA model; only the adapters (and ``modules_to_save``) train.

    ``target_modules: null`` uses peft's per-architecture default (BERT: query/value; Qwen3 and Llama:
    q_proj/v_proj); pass e.g. ``[q_proj, k_proj, v_proj, o_proj]`` for more capacity.
    """
    from peft import LoraConfig, get_peft_model

    unknown = set(options) - set(LORA_KEYS)
    if unknown:
        raise ConfigError(f"unknown model.lora keys {sorted(unknown)}; allowed: {list(LORA_KEYS)}")
    target = options.get("target_modules")
    config = LoraConfig(r=int(options.get("r", 16)), lora_alpha=float(options.get("alpha", 32)),
                        lora_dropout=float(options.get("dropout", 0.0)),
                        target_modules=list(target) if target else None,
                        modules_to_save=list(options["modules_to_save"]) if options.get("modules_to_save") else None)
    try:
        return get_peft_model(backbone, config)
    except ValueError as err:  # peft has no default target modules for this architecture
        raise ConfigError(f"LoRA for {backbone.config.model_type}: {err}; set model.lora.target_modules") from err


def is_lora(backbone: nn.Module) -> bool:
    # peft is an optional dependency: without it nothing can be a LoRA model, and saving must still work.
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(backbone, PeftModel)


def merged_backbone(backbone: nn.Module) -> nn.Module:
    """The plain backbone to export: a LoRA model is copied and merged (training continues unmerged).

    The copy costs one extra model in memory for the duration of the save; merging in place and
    unmerging afterwards would avoid it but leaves rounding drift in bf16 weights after each export.
    """
    if not is_lora(backbone):
        return backbone
    return copy.deepcopy(backbone).merge_and_unload()


def trainable_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, for the log and the model card."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


def lora_summary(backbone: nn.Module) -> dict[str, Any] | None:
    """``{r, alpha, dropout, target_modules, trainable}`` of a LoRA backbone (for the model card), else None."""
    if not is_lora(backbone):
        return None
    config = backbone.peft_config["default"]
    trainable, total = trainable_parameters(backbone)
    return {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": sorted(config.target_modules or []),
            "trainable": f"{trainable:,} of {total:,} parameters"}

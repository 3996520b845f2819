"""Prompt formatting shared by the collator (training) and the encoder (inference), so both agree exactly."""

from __future__ import annotations

DEFAULT_INSTRUCTION_TEMPLATE = "{instruction} {text}"


def format_text(text: str, prompt: str = "", instruction: str | None = None,
                instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    """A per-example instruction replaces the model's fixed prompt (e.g. Qwen3's ``Instruct: ...\\nQuery:``)."""
    if instruction:
        return instruction_template.format(instruction=instruction, text=text)
    return prompt + text

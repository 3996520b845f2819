"""Prompt formatting shared by the collator (training) and the encoder (inference), so both agree exactly.

Also how many leading tokens of a formatted text are its prompt (``prompt_token_count``): mean pooling leaves
them out when ``model.pool_prompt=false``, as the official CoDiEmb code and sentence-transformers'
``Pooling(include_prompt=False)`` do.
"""

from __future__ import annotations

DEFAULT_INSTRUCTION_TEMPLATE = "{instruction} {text}"
_TEXT = "\x00codiemb-text\x00"


def format_text(text: str, prompt: str = "", instruction: str | None = None,
                instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    """A per-example instruction replaces the model's fixed prompt (e.g. Qwen3's ``Instruct: ...\\nQuery:``)."""
    if instruction:
        return instruction_template.format(instruction=instruction, text=text)
    return prompt + text


def prompt_prefix(prompt: str = "", instruction: str | None = None,
                  instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    """The part of :func:`format_text`'s output that comes before the text (``""`` without a prompt)."""
    return format_text(_TEXT, prompt, instruction, instruction_template).split(_TEXT)[0]


def prompt_token_count(tokenizer, prefix: str, cache: dict | None = None) -> int:
    """Leading tokens that belong to ``prefix``: the prefix tokenised alone with the tokenizer's special tokens,
    minus a trailing special token (SEP / EOS). The leading CLS / BOS counts as prompt. This is exactly
    sentence-transformers' ``Transformer._get_prompt_length``, so exports pool the same tokens. ``""`` -> 0."""
    if not prefix:
        return 0
    if cache is not None and prefix in cache:
        return cache[prefix]
    ids = tokenizer(prefix)["input_ids"]
    count = len(ids) - (1 if ids and ids[-1] in set(tokenizer.all_special_ids) else 0)
    if cache is not None:
        cache[prefix] = count
    return count

"""Generated model cards (``README.md`` in every exported directory).

The card states what a user needs to reproduce the embedding: base model, pooling formula, prompts,
training data and sizes, task mix, losses, LoRA and an evaluation table, plus two ways
to load it (``SentenceTransformer(dir)``; ``AutoModel`` + the pooling written out). Front matter follows
the Hugging Face model-card metadata (https://huggingface.co/docs/hub/model-cards).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codiemb.utils.atomic import atomic_write_text

CARD_FILE = "README.md"

# The pooling formulas of codiemb.models.pooling.pool, as plain PyTorch for the AutoModel recipe.
_POOLING_CODE = {
    "mean": "emb = (hidden * mask).sum(1) / mask.sum(1)",
    "cls": "first = batch['attention_mask'].argmax(1)  # first real token, any padding side\n"
           "emb = hidden[torch.arange(len(hidden)), first]",
    "last_token": "am = batch['attention_mask']\n"
                  "last = am.size(1) - 1 - am.flip(1).argmax(1)  # last real token, any padding side\n"
                  "emb = hidden[torch.arange(len(hidden)), last]",
    "weighted_mean": "w = (batch['attention_mask'].cumsum(1) * batch['attention_mask']).unsqueeze(-1).float()\n"
                     "emb = (hidden * w).sum(1) / w.sum(1)  # weights 1..n from each text's first token",
}


def render_model_card(settings: Mapping[str, Any], embedding_dim: int, *, title: str | None = None,
                      datasets: Mapping[str, Mapping[str, Any]] | None = None, task_mix: str | None = None,
                      losses: Mapping[str, Any] | None = None, lora: Mapping[str, Any] | None = None,
                      evaluation: Mapping[str, Mapping[str, float]] | None = None,
                      training: Mapping[str, Any] | None = None) -> str:
    """Markdown card. ``datasets``: ``{name: {"task": ..., "rows": n}}``; ``losses``: ``{"ir": ..., "sts": ...}``
    (a class name or a config dict); ``evaluation``: ``{model: {metric: value}}`` (one row per model)."""
    base = settings.get("base_model", "")
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, feature-extraction, sentence-similarity, codiemb]"]
    if base and not base.startswith(("bundled:", "/", ".")):
        front.append(f"base_model: {base}")
    if datasets:
        front.append("datasets: [" + ", ".join(datasets) + "]")
    lines = front + ["---", "", f"# {title or 'CoDiEmb embedding model'}", "",
                     "Trained with [codiemb](https://arxiv.org/abs/2508.11442) (CoDiEmb: one encoder for "
                     "information retrieval and semantic textual similarity).", "", "## Model", "",
                     "| setting | value |", "|---|---|",
                     f"| base model | `{base}` |", f"| embedding dimension | {embedding_dim} |",
                     f"| pooling | {settings.get('pooling')} |",
                     f"| L2-normalised | {settings.get('normalize')} |",
                     f"| query prompt | {_code(settings.get('query_prompt'))} |",
                     f"| passage prompt | {_code(settings.get('passage_prompt'))} |",
                     f"| max length (query / passage) | {settings.get('max_query_length')} / "
                     f"{settings.get('max_passage_length')} |",
                     f"| bidirectional attention (decoders) | {settings.get('bidirectional', False)} |",
                     f"| prompt tokens in mean pooling | {_pools_prompt(settings)} |"] + _matryoshka_row(settings) + [""]
    if datasets:
        lines += ["## Training data", "", "| data set | task | rows |", "|---|---|---|"]
        lines += [f"| {name} | {info.get('task', '')} | {info.get('rows', '')} |" for name, info in datasets.items()]
        lines.append("")
    recipe = {"task mix": task_mix, "IR loss": _describe(losses, "ir"), "STS loss": _describe(losses, "sts")}
    recipe.update({k: v for k, v in (training or {}).items()})
    if lora:
        recipe["LoRA"] = ", ".join(f"{k}={v}" for k, v in lora.items() if k != "enabled")
    recipe = {k: v for k, v in recipe.items() if v not in (None, "")}
    if recipe:
        lines += ["## Training recipe", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in recipe.items()] + [""]
    if evaluation:
        metrics = sorted({m for row in evaluation.values() for m in row})
        lines += ["## Evaluation", "", "| model | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {name} | " + " | ".join(_num(row.get(m)) for m in metrics) + " |"
                  for name, row in evaluation.items()]
        lines.append("")
    lines += _usage(settings)
    return "\n".join(lines) + "\n"


def update_model_card(directory: str | Path, **info: Any) -> Path:
    """Rewrite ``<directory>/README.md`` from its ``codiemb.json`` + ``config.json`` and ``info``."""
    directory = Path(directory)
    settings = json.loads((directory / "codiemb.json").read_text())
    config = json.loads((directory / "config.json").read_text())
    dim = config.get("hidden_size") or config.get("d_model") or 0
    atomic_write_text(directory / CARD_FILE, render_model_card(settings, dim, **info))
    return directory / CARD_FILE


def _usage(settings: Mapping[str, Any]) -> list[str]:
    pooling = settings.get("pooling", "mean")
    normalize = "emb = torch.nn.functional.normalize(emb, dim=-1)\n" if settings.get("normalize") else ""
    padding = "left" if pooling == "last_token" else "right"
    lines = ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             'model = SentenceTransformer("path/to/this/dir")',
             'q = model.encode(["how do I reset my password"], prompt_name="query")',
             'd = model.encode(["Open Settings > Account > Reset password."]'
             + (', prompt_name="document")' if settings.get("passage_prompt") else ")"),
             "print(model.similarity(q, d))"] + _matryoshka_usage(settings) + ["```", "",
             f"With plain transformers (the pooling is `{pooling}`; prepend the query prompt to queries yourself):", "",
             "```python", "import torch", "from transformers import AutoModel, AutoTokenizer", "",
             'tok = AutoTokenizer.from_pretrained("path/to/this/dir")',
             'model = AutoModel.from_pretrained("path/to/this/dir").eval()',
             f'batch = tok(texts, padding=True, truncation=True, return_tensors="pt")  # {padding} padding is fine',
             "with torch.no_grad():", "    hidden = model(**batch).last_hidden_state",
             "mask = batch['attention_mask'].unsqueeze(-1).float()"] + _prompt_mask(settings) + [
             _POOLING_CODE.get(pooling, "")] + ([normalize.rstrip("\n")] if normalize else []) + ["```"]
    if settings.get("bidirectional"):
        lines += ["", "**Note:** this decoder was trained with bidirectional attention. `SentenceTransformer`/"
                  "`AutoModel` apply the causal mask and give different embeddings; load it with "
                  "`codiemb.models.encoder.Encoder.from_pretrained(dir)`, which restores the full mask."]
    return lines


def _matryoshka_row(settings: Mapping[str, Any]) -> list[str]:
    """The leading sizes a Matryoshka loss trained (``loss.matryoshka_dims``), when it did."""
    dims = settings.get("matryoshka_dims")
    if not dims:
        return []
    return [f"| Matryoshka sizes (trained; truncate + re-normalise) | {', '.join(str(d) for d in dims)} |"]


def _matryoshka_usage(settings: Mapping[str, Any]) -> list[str]:
    dims = settings.get("matryoshka_dims")
    if not dims:
        return []
    small = min(dims)
    return ["", f"# also trained at sizes {', '.join(str(d) for d in dims)}: smaller, faster vectors",
            f'small = SentenceTransformer("path/to/this/dir", truncate_dim={small})']


def _pools_prompt(settings: Mapping[str, Any]) -> bool:
    return bool(settings.get("pool_prompt", True)) or settings.get("pooling", "mean") not in ("mean", "weighted_mean")


def _prompt_mask(settings: Mapping[str, Any]) -> list[str]:
    """Recipe lines that leave the prompt out of mean pooling (``pool_prompt: false``), as training did."""
    if _pools_prompt(settings):
        return []
    return [(f"prompt = {settings.get('passage_prompt', '')!r}  # what precedes `texts`: the passage prompt here; "
             "the query prompt for queries"),
            "ids = tok(prompt)['input_ids'] if prompt else []",
            "n = len(ids) - (ids[-1] in tok.all_special_ids) if ids else 0  # [CLS] + prompt tokens",
            "mask[:, :n] = 0  # the prompt is left out of the mean (right padding)"]


def _describe(losses: Mapping[str, Any] | None, task: str) -> str | None:
    value = (losses or {}).get(task)
    if isinstance(value, Mapping):
        name = str(value.get("_target_", "")).rsplit(".", 1)[-1]
        options = ", ".join(f"{k}={v}" for k, v in value.items() if k != "_target_")
        return f"{name}({options})"
    return None if value is None else str(value)


def _code(text: Any) -> str:
    return f"`{text!r}`" if text else "(none)"


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

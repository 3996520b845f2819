"""The encoder: a Hugging Face backbone + pooling + optional L2 normalisation.

Saves and loads in the sentence-transformers directory layout, so an exported model works with
``SentenceTransformer(dir)`` as well as with :meth:`Encoder.from_pretrained`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoTokenizer

from codiemb.models.attention import bidirectional_attention_mask, check_bidirectional_support
from codiemb.models.lora import apply_lora, lora_enabled, lora_summary, merged_backbone
from codiemb.models.pooling import POOLING_MODES, PROMPT_AWARE_MODES, exclude_prompt, pool
from codiemb.models.resolve import resolve_model_path
from codiemb.models.st_layout import read_saved_settings, write_sentence_transformers_files
from codiemb.prompts import DEFAULT_INSTRUCTION_TEMPLATE, format_text, prompt_prefix, prompt_token_count
from codiemb.utils.atomic import atomic_directory


class Encoder(nn.Module):
    """Backbone + pooling. ``forward`` works on token tensors; ``encode`` on raw texts."""

    # encode() only (inference, like SentenceTransformer(truncate_dim=...)): the first truncate_dim coordinates,
    # L2-re-normalised; eval.py truncate_dim=<d> sets it. None = the full embedding.
    truncate_dim: int | None = None

    def __init__(self, backbone: nn.Module, tokenizer, *, pooling: str = "mean", normalize: bool = True,
                 query_prompt: str = "", passage_prompt: str = "",
                 instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE,
                 max_query_length: int = 64, max_passage_length: int = 256, base_model: str = "",
                 bidirectional: bool = False, pool_prompt: bool = False,
                 matryoshka_dims: Sequence[int] | None = None):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING_MODES}")
        self.backbone, self.tokenizer = backbone, tokenizer
        self.pooling, self.normalize = pooling, normalize
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.instruction_template = instruction_template
        self.max_query_length, self.max_passage_length = max_query_length, max_passage_length
        self.base_model = base_model
        self.bidirectional = bidirectional  # decoders only: attend both ways (see bidirectional_attention_mask)
        # False: mean pooling leaves the prompt / instruction tokens out (features["prompt_length"]), as the
        # official CoDiEmb code does; CLS and last-token pooling are unaffected.
        self.pool_prompt = pool_prompt
        # the leading sizes a Matryoshka loss trained (loss.matryoshka_dims), saved in codiemb.json and the card
        self.matryoshka_dims = tuple(matryoshka_dims) if matryoshka_dims else None
        self._prompt_lengths: dict[str, int] = {}

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, pooling: str | None = None, normalize: bool | None = None,
                        query_prompt: str | None = None, passage_prompt: str | None = None,
                        instruction_template: str | None = None, max_query_length: int | None = None,
                        max_passage_length: int | None = None, padding_side: str | None = None,
                        torch_dtype: str | None = None, attn_implementation: str | None = None,
                        trust_remote_code: bool = False, gradient_checkpointing: bool = False,
                        random_init: bool = False, config_overrides: dict | None = None,
                        backbone_kwargs: dict | None = None, bidirectional: bool | None = None,
                        lora: dict | None = None, pool_prompt: bool | None = None) -> Encoder:
        """Load from a hub name or local directory.

        Settings saved in an exported directory (``codiemb.json``) are the defaults; explicit arguments win.
        ``random_init`` builds the architecture from its config (with ``config_overrides``) without weights,
        which is how tests get tiny models of every architecture without a download.
        ``bidirectional`` lifts the causal mask of decoder backbones (:data:`codiemb.models.attention.BIDIRECTIONAL_MODEL_TYPES`);
        ``lora`` (the ``model.lora`` node, see :mod:`codiemb.models.lora`) trains LoRA adapters only.
        ``pool_prompt`` (default False; True for exports made before the option existed, which pooled it)
        decides whether mean pooling averages over the prompt tokens too.
        """
        path = resolve_model_path(name_or_path)
        saved = read_saved_settings(path)
        settings = {
            "pooling": pooling or saved.get("pooling", "mean"),
            "normalize": saved.get("normalize", True) if normalize is None else normalize,
            "query_prompt": saved.get("query_prompt", "") if query_prompt is None else query_prompt,
            "passage_prompt": saved.get("passage_prompt", "") if passage_prompt is None else passage_prompt,
            "instruction_template": instruction_template or saved.get("instruction_template",
                                                                      DEFAULT_INSTRUCTION_TEMPLATE),
            "max_query_length": max_query_length or saved.get("max_query_length", 64),
            "max_passage_length": max_passage_length or saved.get("max_passage_length", 256),
            "base_model": saved.get("base_model", str(name_or_path)),
            "bidirectional": saved.get("bidirectional", False) if bidirectional is None else bool(bidirectional),
            "pool_prompt": saved.get("pool_prompt", bool(saved)) if pool_prompt is None else bool(pool_prompt),
            "matryoshka_dims": saved.get("matryoshka_dims"),
        }
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if padding_side:
            tokenizer.padding_side = padding_side
        if tokenizer.pad_token is None:  # decoder tokenizers often ship without one
            tokenizer.pad_token = tokenizer.eos_token
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **(config_overrides or {}))
        kwargs = dict(backbone_kwargs or {})
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model_class = _model_class(config, trust_remote_code)
        # The MiniLM/BERT checkpoints carry a pooler that our pooling never uses; leaving it in makes
        # DDP wait for gradients that never come (or silently desync), so we drop it where we can.
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            kwargs["add_pooling_layer"] = False
        if random_init:
            backbone = model_class._from_config(config, **kwargs)
        else:
            if torch_dtype:
                kwargs["dtype"] = getattr(torch, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
            with _quiet_progress():  # its load report would flag the pooler we drop on purpose
                backbone = model_class.from_pretrained(path, config=config, trust_remote_code=trust_remote_code,
                                                       **kwargs)
        if gradient_checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if settings["bidirectional"]:
            check_bidirectional_support(backbone.config)  # the built model knows its attention implementation
        if lora_enabled(lora):
            backbone = apply_lora(backbone, {k: v for k, v in lora.items()})
        return cls(backbone, tokenizer, **settings)

    # ----------------------------------------------------------------- texts -> tokens
    def format(self, texts: Sequence[str], kind: str, instructions: Sequence[str | None] | None = None) -> list[str]:
        """Apply the query/passage prompt (and a per-text instruction for queries)."""
        prompt = self.query_prompt if kind == "query" else self.passage_prompt
        instructions = instructions if instructions is not None else [None] * len(texts)
        return [format_text(text, prompt, instruction, self.instruction_template)
                for text, instruction in zip(texts, instructions)]

    def prompt_lengths(self, kind: str, instructions: Sequence[str | None]) -> list[int]:
        """Tokens of each text's prompt (see :func:`codiemb.prompts.prompt_token_count`)."""
        prompt = self.query_prompt if kind == "query" else self.passage_prompt
        return [prompt_token_count(self.tokenizer, prompt_prefix(prompt, instruction, self.instruction_template),
                                   self._prompt_lengths) for instruction in instructions]

    def tokenize(self, texts: Sequence[str], kind: str = "passage",
                 prompt_lengths: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        max_length = self.max_query_length if kind == "query" else self.max_passage_length
        features = dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                                       return_tensors="pt"))
        if prompt_lengths is not None:
            features["prompt_length"] = torch.tensor(list(prompt_lengths), dtype=torch.long)
        return features

    # ----------------------------------------------------------------- forward
    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    def forward(self, features: dict[str, torch.Tensor], hidden_layer: int | None = None):
        """Embed tokenised texts. With ``hidden_layer`` also return that layer's pooled embedding."""
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.bidirectional:
            inputs["attention_mask"] = bidirectional_attention_mask(features["attention_mask"], self.backbone.config)
        mask = self.pooling_mask(features)
        if hidden_layer is None:
            out = self.backbone(**inputs, return_dict=True)
            return self._pool(out.last_hidden_state, mask)
        # A forward hook on that one layer instead of output_hidden_states: it keeps one extra activation rather
        # than all of them, and works after the model was pickled to spawned DDP workers (transformers' own
        # capture hooks are not restored by unpickling).
        captured = {}
        layer = self.transformer_layers()[hidden_layer - 1]  # hidden_states[i] is the output of layer i - 1
        handle = layer.register_forward_hook(
            lambda module, args, output: captured.__setitem__("h", output[0] if isinstance(output, tuple) else output))
        try:
            out = self.backbone(**inputs, return_dict=True)
        finally:
            handle.remove()
        return self._pool(out.last_hidden_state, mask), self._pool(captured["h"], mask)

    def transformer_layers(self) -> nn.ModuleList:
        """The backbone's stack of transformer blocks (BERT's ``encoder.layer``, Qwen's ``layers``, ...)."""
        for module in self.backbone.modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers:
                return module
        raise ValueError(f"cannot find the {self.num_layers} transformer layers of {type(self.backbone).__name__}")

    def pooling_mask(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tokens pooling averages over: the attention mask, minus the prompt when ``pool_prompt`` is off."""
        mask = features["attention_mask"]
        if self.pool_prompt or self.pooling not in PROMPT_AWARE_MODES or "prompt_length" not in features:
            return mask
        return exclude_prompt(mask, features["prompt_length"])

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = pool(hidden, mask, self.pooling)
        return F.normalize(emb.float(), dim=-1) if self.normalize else emb.float()

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str = "passage", batch_size: int = 64,
               instructions: Sequence[str | None] | None = None, show_progress: bool = False,
               autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Embed raw texts; returns a float32 CPU tensor in input order.

        Texts are sorted by length first so each batch pads to similar lengths (less wasted compute).
        """
        was_training = self.training
        self.eval()
        formatted = self.format(texts, kind, instructions)
        lengths = self.prompt_lengths(kind, instructions if instructions is not None else [None] * len(texts))
        order = sorted(range(len(formatted)), key=lambda i: -len(formatted[i]))
        device = next(self.parameters()).device
        # each batch is written straight to its rows: a large corpus is held once, not as chunks + a copy
        result = torch.empty(len(texts), self.truncate_dim or self.embedding_dim)
        starts = range(0, len(order), batch_size)
        if show_progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=f"encode {kind}", unit="batch")
        for start in starts:
            rows = order[start:start + batch_size]
            features = self.tokenize([formatted[i] for i in rows], kind, [lengths[i] for i in rows])
            features = {k: v.to(device) for k, v in features.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                emb = self(features).float()
                if self.truncate_dim:
                    emb = F.normalize(emb[:, :self.truncate_dim], dim=-1)
                result[torch.tensor(rows)] = emb.cpu()
        self.train(was_training)
        return result

    @property
    def embedding_dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    # ----------------------------------------------------------------- saving
    def settings(self) -> dict:
        return {"pooling": self.pooling, "normalize": self.normalize, "query_prompt": self.query_prompt,
                "passage_prompt": self.passage_prompt, "instruction_template": self.instruction_template,
                "max_query_length": self.max_query_length, "max_passage_length": self.max_passage_length,
                "base_model": self.base_model, "bidirectional": self.bidirectional,
                "pool_prompt": self.pool_prompt,
                **({"matryoshka_dims": list(self.matryoshka_dims)} if self.matryoshka_dims else {})}

    def save(self, directory: str | Path, extra_files: dict[str, str] | None = None,
             card: dict | None = None) -> Path:
        """Export in the sentence-transformers layout; written to a temporary name, then renamed.

        A LoRA backbone is saved merged (plain tensors). ``README.md`` is a generated model card
        (:func:`codiemb.models.card.render_model_card`, ``card`` = its keyword arguments) unless
        ``extra_files`` brings one.
        """
        from codiemb.models.card import render_model_card

        with atomic_directory(directory) as tmp, _quiet_progress():
            merged_backbone(self.backbone).save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            write_sentence_transformers_files(tmp, self.settings(), self.embedding_dim)
            card = {"lora": lora_summary(self.backbone), **(card or {})}
            files = {"README.md": render_model_card(self.settings(), self.embedding_dim, **card)}
            files.update(extra_files or {})
            for name, text in files.items():
                (tmp / name).write_text(text)
        return Path(directory)


@contextlib.contextmanager
def _quiet_progress():
    """transformers draws a progress bar per save/load and a load report; a run exports many times, so keep the
    console to what matters (errors still show)."""
    from transformers.utils import logging as hf_logging

    enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if enabled:
            hf_logging.enable_progress_bar()


def _model_class(config, trust_remote_code: bool):
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    if type(config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(config)]
    if trust_remote_code and getattr(config, "auto_map", None) and "AutoModel" in config.auto_map:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        return get_class_from_dynamic_module(config.auto_map["AutoModel"], config._name_or_path)
    raise ValueError(f"no AutoModel class for config type {type(config).__name__}")

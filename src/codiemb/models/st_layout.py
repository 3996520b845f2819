"""The sentence-transformers directory layout of an exported model.

The module files written here make ``SentenceTransformer(dir)`` rebuild the encoder's pooling, normalisation
and prompts exactly; ``codiemb.json`` keeps the encoder's own settings for :meth:`Encoder.from_pretrained`.

The encoder builds BERT-like backbones without their pooler (``add_pooling_layer=False``: our pooling never uses
it), so the export holds no ``pooler.*`` tensors. ``sentence_bert_config.json`` then carries
``model_args: {add_pooling_layer: false}``, which sentence-transformers passes to ``AutoModel.from_pretrained``:
it builds the same pooler-less architecture, and nothing is reported MISSING (or initialised at random) on load.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from codiemb.models.pooling import PROMPT_AWARE_MODES

CODIEMB_CONFIG = "codiemb.json"
_ST_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                    "last_token": "pooling_mode_lasttoken", "weighted_mean": "pooling_mode_weightedmean_tokens"}


def write_sentence_transformers_files(directory: Path, settings: dict, dim: int) -> None:
    """The module files that make ``SentenceTransformer(directory)`` rebuild our pooling exactly."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if settings["normalize"]:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    # include_prompt=False makes sentence-transformers drop the prompt's tokens (CLS included) from the mask;
    # only mean-type pooling may see that (its CLS pooling would otherwise pick the first text token).
    pool_prompt = settings.get("pool_prompt", True) or settings["pooling"] not in PROMPT_AWARE_MODES
    pooling = {"word_embedding_dimension": dim, "include_prompt": bool(pool_prompt)}
    pooling.update({key: settings["pooling"] == mode for mode, key in _ST_POOLING_KEYS.items()})
    (directory / "1_Pooling").mkdir(exist_ok=True)
    _dump(directory / "1_Pooling" / "config.json", pooling)
    _dump(directory / "modules.json", modules)
    st_config = {"max_seq_length": settings["max_passage_length"], "do_lower_case": False}
    if _pooler_dropped(directory):
        # the long-standing key: sentence-transformers 6 reads it as its newer "model_kwargs"
        st_config["model_args"] = {"add_pooling_layer": False}
    _dump(directory / "sentence_bert_config.json", st_config)
    _dump(directory / "config_sentence_transformers.json",
          {"prompts": {"query": settings["query_prompt"], "document": settings["passage_prompt"]},
           "default_prompt_name": None, "similarity_fn_name": "cosine"})
    _dump(directory / CODIEMB_CONFIG, settings)


def _pooler_dropped(directory: Path) -> bool:
    """Whether the backbone saved in ``directory`` has an architecture with an optional pooler
    (``add_pooling_layer`` in its ``AutoModel`` class) and no ``pooler.*`` tensor was saved."""
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        model_class = MODEL_MAPPING[type(AutoConfig.from_pretrained(str(directory)))]
    except (OSError, ValueError, KeyError):  # no config.json, or remote code / an architecture AutoModel lacks
        return False
    if "add_pooling_layer" not in inspect.signature(model_class.__init__).parameters:
        return False
    return not any(".pooler." in f".{name}" for name in _tensor_names(directory))


def _tensor_names(directory: Path) -> list[str]:
    """Names of the tensors saved in ``directory`` (safetensors headers only; sharded or not)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    names = []
    for file in sorted(directory.glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            names.extend(handle.keys())
    return names


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def read_saved_settings(path: str) -> dict:
    file = Path(path) / CODIEMB_CONFIG
    return json.loads(file.read_text()) if file.is_file() else {}

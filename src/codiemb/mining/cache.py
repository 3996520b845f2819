"""Dataset specs with a ``mine:`` block: hard negatives mined on first use, cached, then read as JSONL.

    - {name: scifact_train, task: ir, format: beir, path: .../scifact, split: train, holdout: {fraction: 0.1},
       mine: {output: "${paths.log_dir}/mined/scifact-train.jsonl", range_min: 10, range_max: 100,
              num_negatives: 3, precision: auto}}

The first run mines with the model it is about to train (its initial weights, as sentence-transformers'
recipes do; ``mine.model`` picks another) and writes ``output`` plus ``output.meta.json`` (input, model and
options, and the sha256 of the file it describes). Later runs read the cache. A cache whose meta differs from
the spec, or whose file is not the one the meta hashed (a run that died between writing the file and its meta),
is mined again, so a changed option never silently reuses stale negatives. The spec then loads like any unified JSONL dataset, with its
``holdout`` and ``max_rows`` applied after mining (mining sees every query; only training drops some).
Kept out of :mod:`codiemb.data` because mining needs the model and the data room never imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codiemb.errors import ConfigError
from codiemb.utils.atomic import atomic_write_text
from codiemb.utils.precision import resolve_short_precision
from codiemb.utils.timing import stage

log = logging.getLogger(__name__)

# Keys of a dataset spec that act after reading (they stay on the rewritten spec); the rest describe the input.
LOADING_KEYS = ("name", "task", "holdout", "max_rows", "on_error")
# Model settings that change the embeddings (and so the mined negatives); training-only keys are left out.
ENCODER_KEYS = ("pooling", "normalize", "query_prompt", "passage_prompt", "instruction_template",
                "max_query_length", "max_passage_length", "padding_side", "bidirectional", "random_init",
                "config_overrides", "trust_remote_code", "attn_implementation")


def resolve_mined_specs(specs: Sequence[dict], model: dict, rank: int = 0) -> list[dict]:
    """``specs`` with every ``mine:`` block replaced by its (possibly just mined) JSONL cache.

    ``model`` is the training model config (``name_or_path`` + encoder settings). ``rank`` > 0 never mines:
    under a launcher that starts all ranks at once they would race on the same file.
    """
    return [ensure_mined(dict(spec), rank=rank, model=model) if spec.get("mine") else dict(spec) for spec in specs]


def ensure_mined(spec: dict, *, model: dict, rank: int = 0) -> dict:
    options = dict(spec.pop("mine"))
    name = spec.get("name", "?")
    if "output" not in options:
        raise ConfigError(f"dataset '{name}': a mine block needs 'output' (the cache file to write)")
    output = Path(options.pop("output"))
    model_path = options.pop("model", None) or model["name_or_path"]
    # The precision actually used goes into the meta: a cache mined in bf16 is not reused as fp32's.
    options["precision"] = resolve_short_precision(options.get("precision"), "cpu", "mining precision")
    encoder_options = {k: model[k] for k in ENCODER_KEYS if model.get(k) is not None}
    # dropout rates act in training only (mining encodes in eval mode): they neither change nor describe the cache
    kept = {k: v for k, v in (encoder_options.pop("config_overrides", None) or {}).items() if "dropout" not in str(k)}
    if kept:
        encoder_options["config_overrides"] = kept
    reader_options = {k: v for k, v in spec.items() if k not in LOADING_KEYS}
    meta = {"input": reader_options, "model": model_path, "encoder": encoder_options, "options": options}
    meta_file = output.with_name(output.name + ".meta.json")
    if not _cache_matches(output, meta_file, meta):
        if rank > 0:
            raise ConfigError(f"dataset '{name}': the mined cache {output} is missing or stale and rank {rank} "
                              "does not mine; mine it first with one process (python train.py on one device, "
                              "or python mine.py) so every rank reads the same file")
        from codiemb.mining.miner import mine_dataset  # imports the model stack only when mining is needed

        inputs = dict(reader_options)
        with stage(f"dataset '{name}': mining hard negatives into {output} (cached for later runs)"):
            mine_dataset(model_path=model_path, encoder_options=encoder_options, input_format=inputs.pop("format"),
                         input_path=str(inputs.pop("path")), split=inputs.pop("split", None), name=name,
                         reader_options=inputs, output=str(output), show_progress=True, **options)
        # The meta names the exact bytes it describes: if this write fails or the process dies first, the old
        # meta no longer matches the new file, so no later run can take these negatives for another option's.
        atomic_write_text(meta_file, json.dumps({**meta, "sha256": _sha256(output)}, indent=1, sort_keys=True)
                          + "\n")
    else:
        log.info("dataset '%s': reading mined hard negatives from %s", name, output)
    return {**{k: spec[k] for k in LOADING_KEYS if k in spec}, "format": "jsonl", "path": str(output)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_matches(output: Path, meta_file: Path, meta: dict[str, Any]) -> bool:
    """The cache is current only if its meta has these options *and* the hash of the file beside it."""
    if not (output.is_file() and meta_file.is_file()):
        return False
    try:
        stored = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(stored, dict) or stored.pop("sha256", None) != _sha256(output):
        return False
    return stored == json.loads(json.dumps(meta, sort_keys=True))

"""Read exported model directories tensor by tensor, check they can be merged, merge in row chunks.

Memory: tensors are read in row chunks of about ``chunk_elements / K`` elements per checkpoint (with
``os.pread``, see :mod:`codiemb.merge.safetensors_io`), so the working set is a few ``chunk_elements`` buffers
plus the merged model being assembled, whatever K is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codiemb.errors import MergeError
from codiemb.merge.methods import ChunkContext, MergeRule, ties_thresholds
from codiemb.merge.safetensors_io import SafetensorsFile, write_safetensors

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CHUNK_ELEMENTS = 1 << 21  # elements of one chunk summed over the K checkpoints (8 MiB per float32 buffer)
# config.json keys that fix the shape of the network; any difference means another architecture.
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings",
                     "type_vocab_size", "head_dim")
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


@dataclass
class ModelDir:
    """An exported model directory: where each tensor lives (one file or an index of shards)."""

    path: Path
    tensor_files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> ModelDir:
        path = Path(path)
        if (path / WEIGHTS_NAME).is_file():
            with SafetensorsFile(path / WEIGHTS_NAME) as handle:
                names = handle.keys()
                return cls(path, dict.fromkeys(names, path / WEIGHTS_NAME))
        if (path / INDEX_NAME).is_file():
            weight_map = json.loads((path / INDEX_NAME).read_text())["weight_map"]
            return cls(path, {name: path / shard for name, shard in weight_map.items()})
        raise MergeError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME}; merge inputs must be exported model "
                         "directories (Encoder.save / SentenceTransformer.save)")

    @property
    def weight_files(self) -> set[str]:
        return {p.name for p in self.tensor_files.values()} | {INDEX_NAME}


def check_compatible(dirs: list[ModelDir]) -> None:
    """Refuse inputs with different architectures (config.json) or tokenizers (vocabulary fingerprint)."""
    configs = [_read_json(d.path / "config.json") for d in dirs]
    for key in ARCHITECTURE_KEYS:
        values = {d.path: c.get(key) for d, c in zip(dirs, configs) if c is not None}
        if len(set(map(json.dumps, values.values()))) > 1:
            raise MergeError(f"different architectures: config.json '{key}' is "
                             + ", ".join(f"{v!r} in {p}" for p, v in values.items()))
    prints = {d.path: tokenizer_fingerprint(d.path) for d in dirs}
    known = {p: f for p, f in prints.items() if f is not None}
    if len(set(known.values())) > 1:
        groups: dict[str, list[str]] = {}
        for p, f in known.items():
            groups.setdefault(f[:12], []).append(str(p))
        raise MergeError(f"different tokenizers (vocabulary fingerprints): {groups}")


def tokenizer_fingerprint(path: Path) -> str | None:
    """sha256 of the vocabulary: tokenizer.json's model (vocab, merges) + added tokens, else the vocab files.

    Formatting and padding/truncation settings are left out, so re-saving a tokenizer keeps its fingerprint.
    """
    digest = hashlib.sha256()
    if (path / "tokenizer.json").is_file():
        data = json.loads((path / "tokenizer.json").read_text())
        added = [(t.get("id"), t.get("content")) for t in data.get("added_tokens") or []]
        digest.update(json.dumps({"model": data.get("model"), "added": added}, sort_keys=True).encode())
        return digest.hexdigest()
    found = [name for name in TOKENIZER_FILES if (path / name).is_file()]
    for name in found:
        digest.update(name.encode() + (path / name).read_bytes())
    return digest.hexdigest() if found else None


class TensorReader(contextlib.ExitStack):
    """Open weight files of the base (index 0) and every checkpoint (1..K); closes them on exit."""

    def __init__(self, dirs: list[ModelDir]):
        super().__init__()
        self.dirs = dirs
        self._handles: dict[Path, SafetensorsFile] = {}

    def _handle(self, i: int, name: str) -> SafetensorsFile:
        file = self.dirs[i].tensor_files[name]
        if file not in self._handles:
            self._handles[file] = self.enter_context(SafetensorsFile(file))
        return self._handles[file]

    def shape(self, i: int, name: str) -> list[int]:
        return self._handle(i, name).shape(name)

    def dtype(self, i: int, name: str) -> torch.dtype:
        return self._handle(i, name).dtype(name)

    def read(self, i: int, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        return self._handle(i, name).read(name, start, stop)

    def metadata(self, i: int, name: str) -> dict:
        return self._handle(i, name).metadata


def plan_tensors(reader: TensorReader) -> tuple[list[str], list[str], list[str]]:
    """(float tensors to merge, non-float tensors to copy, base-only tensors ignored); raises MergeError."""
    base, *ckpts = reader.dirs
    names = list(ckpts[-1].tensor_files)
    for d in ckpts[:-1]:
        missing, extra = set(names) - set(d.tensor_files), set(d.tensor_files) - set(names)
        if missing or extra:
            raise MergeError(f"{d.path} has other tensors than {ckpts[-1].path}: missing "
                             f"{sorted(missing)[:5]}, extra {sorted(extra)[:5]} (different architectures?)")
    absent = [n for n in names if n not in base.tensor_files]
    if absent:
        raise MergeError(f"base {base.path} lacks tensors {absent[:5]} that the checkpoints have")
    merged, copied = [], []
    for name in names:
        shapes = {str(reader.dirs[i].path): reader.shape(i, name) for i in range(len(reader.dirs))}
        if len({tuple(s) for s in shapes.values()}) > 1:
            raise MergeError(f"tensor '{name}' has different shapes: {shapes}")
        floats = {reader.dtype(i, name).is_floating_point for i in range(len(reader.dirs))}
        if len(floats) > 1:
            raise MergeError(f"tensor '{name}' is floating point in some inputs and not in others")
        (merged if floats == {True} else copied).append(name)
    return merged, copied, sorted(set(base.tensor_files) - set(names))


def row_chunks(shape: list[int], chunk_elements: int) -> Iterator[tuple[int | None, int | None]]:
    """(start, stop) row ranges of about ``chunk_elements`` each; (None, None) for a 0-d tensor."""
    if not shape:
        yield None, None
        return
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, chunk_elements // per_row)
    for start in range(0, shape[0], step):
        yield start, min(shape[0], start + step)


@dataclass
class TensorStats:
    """What the report shows per tensor: mean coefficient and elements dominated, per checkpoint."""

    numel: int
    weight_sum: torch.Tensor
    dominant: torch.Tensor
    unchanged: int = 0

    def as_dict(self) -> dict:
        n = max(self.numel, 1)
        return {"numel": self.numel, "mean_weight": (self.weight_sum / n).tolist(),
                "dominant_fraction": (self.dominant / n).tolist(), "unchanged_fraction": self.unchanged / n}


def merge_tensor(reader: TensorReader, name: str, rule: MergeRule,
                 chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, TensorStats]:
    """Merge one tensor chunk by chunk; returns it in the last checkpoint's dtype, with its stats."""
    k = len(reader.dirs) - 1
    shape = reader.shape(0, name)
    ctx = ChunkContext(name=name)
    chunk_elements = max(1, chunk_elements // k)  # per checkpoint, so the K-stacked buffers keep one size
    if rule.needs_norms:
        squares = torch.zeros(k, dtype=torch.float64)
        for start, stop in row_chunks(shape, chunk_elements):
            squares += _deltas(reader, name, start, stop).reshape(k, -1).double().pow(2).sum(dim=1)
        ctx.norms = squares.sqrt()
    if rule.needs_thresholds:  # the cut-off needs the whole tensor: one checkpoint at a time
        base = reader.read(0, name).float()
        ctx.thresholds = torch.stack([ties_thresholds((reader.read(i, name).float() - base)[None],
                                                      rule.options["density"])[0] for i in range(1, k + 1)])
        del base
    out_dtype = reader.dtype(k, name)
    merged = torch.empty(shape, dtype=out_dtype)
    stats = TensorStats(math.prod(shape), torch.zeros(k, dtype=torch.float64),
                        torch.zeros(k, dtype=torch.float64))
    for start, stop in row_chunks(shape, chunk_elements):
        ctx.start = start or 0
        base = reader.read(0, name, start, stop)
        deltas = _deltas(reader, name, start, stop, base)
        coefficients = rule.coefficients(deltas, ctx).expand_as(deltas)
        rest = tuple(range(1, deltas.dim()))  # sum the expanded view without materialising it
        stats.weight_sum += coefficients.sum(dim=rest, dtype=torch.float64) if rest else coefficients.double()
        contributions = coefficients * deltas
        del coefficients
        piece = base.to(deltas.dtype) + contributions.sum(dim=0)
        if start is None:
            merged.copy_(piece)
        else:
            merged[start:stop] = piece.to(out_dtype)
        contributions.abs_()
        flat = contributions.reshape(k, -1)
        top = flat.amax(dim=0)
        changed = top > 0
        # An element tied between checkpoints (e.g. equal weight-decay-only updates of unused embedding rows)
        # is shared equally among them, not credited to the first.
        is_top = (flat == top) & changed
        stats.dominant += (is_top.double() / is_top.sum(dim=0).clamp_min(1)).sum(dim=1)
        stats.unchanged += int((~changed).sum())
    check_merged_finite(name, merged, rule)
    return merged, stats


def check_merged_finite(name: str, merged: torch.Tensor, rule: MergeRule) -> None:
    """Refuse a merged tensor holding NaN or inf (in its output dtype: an fp16 sum can overflow)."""
    finite = torch.isfinite(merged)
    if bool(finite.all()):
        return
    nan = int(torch.isnan(merged).sum())
    raise MergeError(f"merged tensor '{name}' is not finite ({nan} NaN, {int((~finite).sum()) - nan} inf of "
                     f"{merged.numel()} values, {merged.dtype}) with method {rule.method} {rule.options}; nothing "
                     "was written (an existing output is left as it was): lower merge.lam or merge float32 "
                     "checkpoints")


def _deltas(reader: TensorReader, name: str, start, stop, base: torch.Tensor | None = None) -> torch.Tensor:
    """[K, *chunk] deltas in float32 (float64 if the base is float64)."""
    base = reader.read(0, name, start, stop) if base is None else base
    dtype = torch.float64 if base.dtype == torch.float64 else torch.float32
    stacked = torch.stack([reader.read(i, name, start, stop).to(dtype) for i in range(1, len(reader.dirs))])
    if not (bool(torch.isfinite(stacked).all()) and bool(torch.isfinite(base).all())):
        _refuse_non_finite_input(reader, name, [base, *stacked])
    return stacked.sub_(base.to(dtype))


def _refuse_non_finite_input(reader: TensorReader, name: str, chunks: list[torch.Tensor]) -> None:
    """Name the first input (base, then checkpoints) whose chunk of ``name`` holds NaN or inf."""
    for i, chunk in enumerate(chunks):
        if not bool(torch.isfinite(chunk).all()):
            kind = "NaN" if bool(torch.isnan(chunk).any()) else "inf"
            raise MergeError(f"{reader.dirs[i].tensor_files[name]}: tensor '{name}' holds {kind} values; a model "
                             "with non-finite weights (a diverged run?) cannot be merged: leave it out of the merge")


def write_model_dir(target: Path, template: ModelDir, tensors: dict[str, torch.Tensor],
                    metadata: dict, skip: tuple[str, ...] = ()) -> None:
    """Non-weight files of ``template`` (less ``skip``) plus ``tensors`` as model.safetensors, into ``target``."""
    skip = template.weight_files | set(skip)
    target.mkdir(parents=True, exist_ok=True)
    for item in template.path.iterdir():
        if item.name in skip:
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
    write_safetensors(tensors, target / WEIGHTS_NAME, metadata={**metadata, "format": "pt"})


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}: not valid JSON ({exc})") from exc

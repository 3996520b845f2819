"""Teacher scores for distillation (issue #24 part 3): score each record's (query, passage) pairs with a teacher
model and keep them as the record's ``pos_scores`` / ``neg_scores`` (FlagEmbedding's layout, :mod:`codiemb.data.schema`).

A teacher is any sentence-transformers model directory (or hub name, or ``bundled:all-MiniLM-L6-v2``):

* a **cross-encoder** (its ``config.json`` names a ``...ForSequenceClassification`` architecture, one label):
  ``sentence_transformers.CrossEncoder(dir).predict(pairs)``, the model's own activation included (a sigmoid for
  one-label models unless its config says otherwise);
* anything else is a **bi-encoder**: ``SentenceTransformer(dir)``, score = cosine of the L2-normalised query and
  passage embeddings (``encode_query`` / ``encode_document``: the model's own query / document prompts, if any).

Each distinct text is embedded once (bi-encoder); each distinct pair is scored once (cross-encoder).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codiemb.data.schema import Record
from codiemb.errors import ConfigError
from codiemb.models.resolve import resolve_model_path

log = logging.getLogger(__name__)


def is_cross_encoder(path: str | Path) -> bool:
    """Whether the model directory ``path`` holds a cross-encoder: a sequence-classification architecture."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


@dataclass
class Teacher:
    kind: str  # "bi-encoder" | "cross-encoder"
    model: Any
    name: str

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64,
              show_progress: bool = False) -> list[float]:
        """One score per ``(query, passage)`` pair."""
        if not pairs:
            return []
        if self.kind == "cross-encoder":
            unique = list(dict.fromkeys(pairs))
            scores = self.model.predict([list(p) for p in unique], batch_size=batch_size,
                                        show_progress_bar=show_progress, convert_to_numpy=True)
            by_pair = dict(zip(unique, (float(s) for s in scores.reshape(len(unique)))))
            return [by_pair[p] for p in pairs]
        queries = list(dict.fromkeys(q for q, _ in pairs))
        passages = list(dict.fromkeys(p for _, p in pairs))
        encode_query = getattr(self.model, "encode_query", self.model.encode)
        encode_document = getattr(self.model, "encode_document", self.model.encode)
        options = {"batch_size": batch_size, "show_progress_bar": show_progress, "convert_to_tensor": True,
                   "normalize_embeddings": True}
        q = encode_query(queries, **options).float()
        p = encode_document(passages, **options).float()
        q_index, p_index = {t: i for i, t in enumerate(queries)}, {t: i for i, t in enumerate(passages)}
        import torch

        rows = torch.tensor([q_index[a] for a, _ in pairs])
        cols = torch.tensor([p_index[b] for _, b in pairs])
        return (q[rows] * p[cols]).sum(-1).cpu().tolist()


def load_teacher(name_or_path: str, *, device: str | None = None) -> Teacher:
    """The teacher at ``name_or_path`` (a directory, hub name or ``bundled:`` alias), cross-encoder or bi-encoder
    as the module doc says."""
    path = resolve_model_path(name_or_path)
    if is_cross_encoder(path):
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(path, device=device)
        labels = getattr(model, "num_labels", 1)
        if labels != 1:
            raise ConfigError(f"teacher={name_or_path} is a cross-encoder with {labels} labels; a teacher gives one "
                              "score per pair (a one-label re-ranker)")
        return Teacher("cross-encoder", model, str(name_or_path))
    from sentence_transformers import SentenceTransformer

    return Teacher("bi-encoder", SentenceTransformer(path, device=device), str(name_or_path))


def score_records(records: Sequence[Record], teacher: Teacher, *, batch_size: int = 64,
                  show_progress: bool = False) -> list[Record]:
    """``records`` with ``pos_scores`` / ``neg_scores`` set to the teacher's score of each positive / negative."""
    pairs = [(r.query, text) for r in records for text in (*r.positives, *r.negatives)]
    scores = iter(teacher.score(pairs, batch_size=batch_size, show_progress=show_progress))
    out = []
    for r in records:
        pos = tuple(next(scores) for _ in r.positives)
        neg = tuple(next(scores) for _ in r.negatives)
        out.append(replace(r, pos_scores=pos, neg_scores=neg))
    log.info("teacher %s (%s) scored %d pairs of %d records", teacher.name, teacher.kind, len(pairs), len(records))
    return out

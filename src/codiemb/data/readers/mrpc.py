"""Microsoft Research Paraphrase Corpus (Dolan & Brockett 2005): ``msr_paraphrase_{train,test}.txt``.

Tab-separated with a header ``Quality  #1 ID  #2 ID  #1 String  #2 String``; the file starts with a UTF-8
BOM and sentences contain bare ``"`` characters, so rows are split on tabs without CSV quoting.

Two readings, chosen with ``task``:

* ``"sts"`` (default): every pair, score = the binary ``Quality`` mapped onto ``score_range``
  (default (0, 1), so ``normalized_score`` is the label itself). A rank-based STS loss (CoSENT) then only
  asks paraphrases to score above non-paraphrases, which is what the binary label supports.
* ``"ir"``: only paraphrase pairs, sentence 1 -> sentence 2 as a symmetric positive; non-paraphrases are
  skipped and counted (their sentence 1 differs from every other pair's, so they cannot serve as hard
  negatives of another query).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, read_text, split_file
from codiemb.data.schema import parse_record
from codiemb.errors import ConfigError, DataError

HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


def mrpc_file(path: str | Path, split: str | None) -> Path:
    """``path`` itself when it is a file, else ``path/msr_paraphrase_<split>.txt``."""
    return split_file(path, split, "msr_paraphrase_{split}.txt", "'train' or 'test'")


def read_mrpc(path: str, *, name: str, task: str | None = None, split: str | None = None,
              on_error: str = "raise", score_range: tuple[float, float] = (0.0, 1.0),
              **_: object) -> ReadResult:
    """Read one MRPC file as STS pairs (``task="sts"``, default) or paraphrase IR pairs (``task="ir"``)."""
    task = task or "sts"
    if task not in ("sts", "ir"):
        raise ConfigError(f"dataset '{name}': task must be 'sts' or 'ir', not {task!r}")
    path = mrpc_file(path, split)
    low, high = float(score_range[0]), float(score_range[1])
    policy, records = RowPolicy(on_error), []
    lines = read_text(path).split("\n")  # without the BOM
    if lines[0].rstrip("\r").split("\t") != HEADER:
        raise DataError(f"expected the header {HEADER}", source=str(path), line=1)
    for line_no, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 5:
                raise DataError(f"expected 5 tab-separated fields, got {len(fields)}", source=str(path),
                                line=line_no)
            if fields[0] not in ("0", "1"):
                raise DataError(f"Quality must be 0 or 1, got {fields[0]!r}", source=str(path), line=line_no,
                                field="Quality")
            paraphrase = fields[0] == "1"
            if task == "ir" and not paraphrase:
                policy.skipped["not a paraphrase (task ir keeps paraphrases only)"] += 1
                continue
            raw = {"query": fields[3].strip(), "positives": [fields[4].strip()]}
            if task == "sts":
                raw["score"] = high if paraphrase else low
            record = parse_record(raw, dataset=name, source=str(path), line=line_no, task=task,
                                  score_range=(low, high))
        except DataError as exc:
            policy.handle(exc)
            continue
        records.append(replace(record, meta={"symmetric": True, "ids": (fields[1], fields[2])}))
    return ReadResult(records, policy.skipped)

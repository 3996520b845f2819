"""SNLI in the SentEval layout: line-aligned ``s1.<split>``, ``s2.<split>``, ``labels.<split>``.

Rows are grouped by premise (``s1``). One IR record per premise: query = premise, positives = its
*entailment* hypotheses, negatives = its *contradiction* hypotheses -- the (anchor, positive, hard negative)
triplets of SimCSE (Gao et al. 2021, sec. 5) and Sentence-BERT's NLI training. Neutral hypotheses are
unused. The task is symmetric (premise and hypothesis are the same kind of text), which is recorded in
``Record.meta["symmetric"]`` so the collator can encode both sides with the same (passage) prompt.
SentEval's copy is tokenised (``holding packages .``); the text is kept as is apart from outer whitespace.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, read_text
from codiemb.data.schema import parse_record
from codiemb.errors import ConfigError, DataError

LABELS = ("entailment", "neutral", "contradiction")
SPLITS = ("train", "dev", "test")


def _lines(path: Path) -> list[str]:
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r").strip() for line in lines]


def _splits(path: Path, split: str | list[str] | None) -> list[str]:
    if split is None:  # every split present, in a fixed order
        found = [s for s in SPLITS if (path / f"labels.{s}").is_file()]
        if not found:
            raise DataError("no labels.<split> files (SentEval SNLI layout)", source=str(path))
        return found
    return [split] if isinstance(split, str) else list(split)


def read_snli(path: str, *, name: str, task: str | None = None, split: str | list[str] | None = None,
              on_error: str = "raise", symmetric: bool = True, **_: object) -> ReadResult:
    """Read ``path/{s1,s2,labels}.<split>`` for each split (``None``: all of train/dev/test present).

    Skipped and counted: neutral rows, rows whose label is not an NLI label (raises unless
    ``on_error="skip"``), and premises that lack an entailment or a contradiction hypothesis.
    """
    if task not in (None, "ir"):
        raise ConfigError(f"dataset '{name}': SNLI triplets are contrastive pairs, so task must be 'ir', "
                          f"not {task!r}")
    path = Path(path)
    if not path.is_dir():
        raise DataError("directory not found", source=str(path))
    policy, records = RowPolicy(on_error), []
    skipped = policy.skipped
    for part in _splits(path, split):
        premises, hypotheses, labels = (_lines(path / f"{stem}.{part}") for stem in ("s1", "s2", "labels"))
        if not len(premises) == len(hypotheses) == len(labels):
            raise DataError(f"s1/s2/labels have {len(premises)}/{len(hypotheses)}/{len(labels)} lines",
                            source=str(path / f"labels.{part}"))
        groups: dict[str, dict[str, list[str]]] = {}
        first_line: dict[str, int] = {}
        for line_no, (premise, hypothesis, label) in enumerate(zip(premises, hypotheses, labels), start=1):
            if label not in LABELS:
                policy.handle(DataError(f"label {label!r} is not one of {LABELS}",
                                        source=str(path / f"labels.{part}"), line=line_no, field="label"))
                continue
            if label == "neutral":
                skipped["neutral hypothesis (unused)"] += 1
                continue
            groups.setdefault(premise, {"entailment": [], "contradiction": []})[label].append(hypothesis)
            first_line.setdefault(premise, line_no)
        for premise, by_label in groups.items():
            if not by_label["entailment"] or not by_label["contradiction"]:
                skipped["premise without both an entailment and a contradiction"] += 1
                continue
            raw = {"query": premise, "positives": by_label["entailment"],
                   "negatives": by_label["contradiction"]}
            try:
                record = parse_record(raw, dataset=name, source=str(path / f"s1.{part}"),
                                      line=first_line[premise], task="ir")
            except DataError as exc:
                policy.handle(exc)
                continue
            records.append(replace(record, meta={"symmetric": symmetric, "split": part}))
    return ReadResult(records, skipped)

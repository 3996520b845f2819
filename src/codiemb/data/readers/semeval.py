"""SemEval STS (2012-2017) release layout: ``STS.input.<subset>.txt`` + line-aligned ``STS.gs.<subset>.txt``.

Each input line is ``sentence1 \\t sentence2`` (the 2016 release appends source columns, which are ignored);
the gold-standard file holds one score in [0, 5] per line. Later years leave a gold line empty for pairs
that were not scored; those pairs are skipped and counted. ``STS.output.*`` files (system runs) are ignored.
Reference: Agirre et al., "SemEval-2012 Task 6: A Pilot on Semantic Textual Similarity" (00-readme.txt).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from codiemb.data.readers.base import ReadResult, RowPolicy, read_text
from codiemb.data.schema import parse_record
from codiemb.errors import ConfigError, DataError

_INPUT = re.compile(r"^STS\.input\.(?P<subset>.+)\.txt$")


def find_pairs(path: str | Path, subsets: list[str] | None = None) -> list[tuple[str, Path, Path]]:
    """``[(subset, input_file, gs_file)]`` for a directory (every subset found) or one input file."""
    path = Path(path)
    if not path.exists():
        raise DataError("file or directory not found", source=str(path))
    inputs = [path] if path.is_file() else sorted(path.glob("STS.input.*.txt"))
    pairs = []
    for input_file in inputs:
        match = _INPUT.match(input_file.name)
        if not match:
            raise DataError("expected a file named STS.input.<subset>.txt", source=str(input_file))
        subset = match["subset"]
        if subsets is not None and subset not in subsets:
            continue
        gs_file = input_file.with_name(f"STS.gs.{subset}.txt")
        if not gs_file.is_file():
            raise DataError(f"no gold-standard file {gs_file.name} beside it", source=str(input_file))
        pairs.append((subset, input_file, gs_file))
    if not pairs:
        raise DataError(f"no STS.input.*.txt files{f' for subsets {subsets}' if subsets else ''}",
                        source=str(path))
    return pairs


def _lines(path: Path) -> list[str]:
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":  # the final newline does not start another row
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_semeval_sts(path: str, *, name: str, task: str | None = None, split: str | None = None,
                     on_error: str = "raise", subsets: list[str] | None = None,
                     score_range: tuple[float, float] = (0.0, 5.0), **_: object) -> ReadResult:
    """Read every ``STS.input.*``/``STS.gs.*`` pair under ``path`` (or one input file) as STS records.

    ``subsets`` (e.g. ``["MSRpar", "MSRvid"]``) restricts which files of a directory are read.
    ``split`` is unused: a SemEval release directory *is* one split.
    """
    if task not in (None, "sts"):
        raise ConfigError(f"dataset '{name}': SemEval STS is graded similarity, so task must be 'sts', "
                          f"not {task!r}")
    policy, records = RowPolicy(on_error), []
    skipped = Counter()
    for _subset, input_file, gs_file in find_pairs(path, subsets):
        inputs, golds = _lines(input_file), _lines(gs_file)
        if len(inputs) != len(golds):
            raise DataError(f"{len(inputs)} sentence pairs but {len(golds)} gold lines in {gs_file.name}",
                            source=str(input_file))
        for line_no, (pair_line, gold_line) in enumerate(zip(inputs, golds), start=1):
            if not gold_line.strip():
                skipped["no gold score"] += 1
                continue
            fields = pair_line.split("\t")
            try:
                if len(fields) < 2:
                    raise DataError(f"expected 'sentence1<TAB>sentence2', got {len(fields)} field(s)",
                                    source=str(input_file), line=line_no, field="sentence2")
                try:
                    score = float(gold_line)
                except ValueError:
                    raise DataError(f"score {gold_line.strip()!r} is not a number", source=str(gs_file),
                                    line=line_no, field="score") from None
                raw = {"query": fields[0].strip(), "positives": [fields[1].strip()], "score": score}
                records.append(parse_record(raw, dataset=name, source=str(input_file), line=line_no,
                                            task="sts", score_range=tuple(score_range)))
            except DataError as exc:
                policy.handle(exc)
    return ReadResult(records, policy.skipped + skipped)

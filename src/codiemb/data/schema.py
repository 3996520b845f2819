"""The unified record every reader produces, and its validation.

One record is one training example of one task:

* ``ir``:  ``query`` -> ``positives`` (>= 1 relevant passages), ``negatives`` (hard negatives, may be empty).
* ``sts``: ``query`` = sentence 1, ``positives`` = [sentence 2], ``score`` = graded similarity inside the
  dataset's declared ``score_range`` (default 0-5).

``instruction`` is optional and, when present, is prepended to the query by the collator.
FlagEmbedding's ``pos``/``neg`` keys are accepted as aliases of ``positives``/``negatives``.

Teacher scores for distillation (FlagEmbedding's layout): a row may carry ``pos_scores`` / ``neg_scores``, lists
of finite numbers, one per positive / negative in the same order. Both or neither (``neg_scores`` may be left out
when there is no negative); absent or null means the row has none (``Record.pos_scores is None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codiemb.errors import DataError

TASKS = ("ir", "sts")
_ALIASES = {"pos": "positives", "neg": "negatives"}
# Characters that render as nothing: a text made only of these and whitespace is as empty as "". str.strip(chars)
# stops at the first other character, so the check costs nothing on ordinary text.
BLANK = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + (
    "\x00\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff")


def show_value(value: Any) -> str:
    """A value for a message: huge integers abbreviated (printing 5000 digits is itself an error)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 18:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[:10]}...({len(digits)} digits)"
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Record:
    task: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    score: float | None = None
    score_range: tuple[float, float] = (0.0, 5.0)
    instruction: str | None = None
    dataset: str = ""
    pos_scores: tuple[float, ...] | None = None  # teacher scores, one per positive (distillation)
    neg_scores: tuple[float, ...] | None = None  # one per negative; None: the row has no teacher scores
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def normalized_score(self) -> float:
        """The STS score mapped linearly onto [0, 1] using the declared range."""
        low, high = self.score_range
        return (float(self.score) - low) / (high - low)


def _text(value: Any, name: str, where: dict) -> str:
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", field=name, **where)
    if not value.strip():
        raise DataError("empty or whitespace-only text", field=name, **where)
    if not value.strip(BLANK):
        raise DataError("only NUL or zero-width characters (no visible text)", field=name, **where)
    try:  # a JSON escape like "\ud800" decodes to a lone surrogate that tokenizers cannot take
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"not valid Unicode ({exc.reason} at character {exc.start})", field=name, **where) from None
    return value


def _texts(value: Any, name: str, where: dict) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # a single passage given without a list is a common, harmless slip
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"expected a list of strings, got {type(value).__name__}", field=name, **where)
    return tuple(_text(v, f"{name}[{i}]", where) for i, v in enumerate(value))


def _number(value: Any, name: str, where: dict) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"expected a number, got {type(value).__name__}", field=name, **where)
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range is as infinite as inf
        number = math.inf
    if not math.isfinite(number):
        raise DataError(f"expected a finite number, got {show_value(value)}", field=name, **where)
    return number


def _scores(value: Any, name: str, count: int, kind: str, where: dict) -> tuple[float, ...]:
    """One finite number per passage of ``kind`` (``count`` of them)."""
    if not isinstance(value, (list, tuple)):
        raise DataError(f"expected a list of numbers, got {type(value).__name__}", field=name, **where)
    if len(value) != count:
        raise DataError(f"expected {count} number{'' if count == 1 else 's'} (one per {kind}), got {len(value)}",
                        field=name, **where)
    return tuple(_number(v, f"{name}[{i}]", where) for i, v in enumerate(value))


def _teacher_scores(raw: Mapping[str, Any], positives: tuple, negatives: tuple,
                    where: dict) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    pos, neg = raw.get("pos_scores"), raw.get("neg_scores")
    if pos is None and neg is None:
        return None, None
    if neg is None and not negatives:
        neg = ()
    for name, value, other in (("pos_scores", pos, "neg_scores"), ("neg_scores", neg, "pos_scores")):
        if value is None:
            raise DataError(f"missing, but '{other}' is given: teacher scores need one number per positive and "
                            "per negative", field=name, **where)
    return (_scores(pos, "pos_scores", len(positives), "positive", where),
            _scores(neg, "neg_scores", len(negatives), "negative", where))


def parse_record(raw: Mapping[str, Any], *, dataset: str, source: str | None = None,
                 line: int | None = None, task: str | None = None,
                 score_range: tuple[float, float] = (0.0, 5.0)) -> Record:
    """Validate one raw mapping and turn it into a :class:`Record`.

    ``task`` is the dataset's declared task; a row's own ``task`` field must agree with it.
    Raises :class:`DataError` naming ``source``, ``line`` and the offending field.
    """
    where = {"source": source, "line": line}
    if not isinstance(raw, Mapping):
        raise DataError(f"expected a JSON object, got {type(raw).__name__}", **where)
    if "pos" in raw or "neg" in raw:
        raw = {_ALIASES.get(k, k): v for k, v in raw.items()}
    row_task = raw.get("task", task)
    if row_task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {row_task!r}", field="task", **where)
    if task is not None and row_task != task:
        raise DataError(f"row says task {row_task!r} but dataset '{dataset}' is declared {task!r}",
                        field="task", **where)
    if "query" not in raw:
        raise DataError("missing required field", field="query", **where)
    query = _text(raw["query"], "query", where)
    positives = _texts(raw.get("positives"), "positives", where)
    if not positives:
        raise DataError("needs at least one positive", field="positives", **where)
    negatives = _texts(raw.get("negatives"), "negatives", where)
    pos_scores, neg_scores = _teacher_scores(raw, positives, negatives, where)
    instruction = raw.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DataError("expected a string", field="instruction", **where)
    # optional: empty means none, but a non-empty one must be text a tokenizer can take
    instruction = _text(instruction, "instruction", where) if instruction and instruction.strip() else None

    score = None
    low, high = (float(score_range[0]), float(score_range[1]))
    if row_task == "sts":
        if len(positives) != 1:
            raise DataError(f"an STS row pairs the query with exactly one text, got {len(positives)}",
                            field="positives", **where)
        score = raw.get("score")
        if score is None:
            raise DataError("an STS row needs a score", field="score", **where)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"expected a number, got {type(score).__name__}", field="score", **where)
        if isinstance(score, float) and math.isnan(score):  # math.isnan(10**400) would overflow
            raise DataError("score is NaN", field="score", **where)
        if not low <= score <= high:  # int/float comparison is exact, even for huge integers
            raise DataError(f"score {show_value(score)} is outside the declared range [{low:g}, {high:g}]",
                            field="score", **where)
        score = float(score)
    return Record(task=row_task, query=query, positives=positives, negatives=negatives, score=score,
                  score_range=(low, high), instruction=instruction or None, dataset=dataset, pos_scores=pos_scores,
                  neg_scores=neg_scores)

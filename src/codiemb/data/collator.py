"""Turn a list of records into padded token tensors for one step (runs in DataLoader workers).

Batch layouts:

* ``ir`` / ``mixed``: ``query`` tokens [B, Lq]; ``passages`` tokens [M, Lp] holding each row's positives then
  its hard negatives; ``positive_mask`` [B, M] marks each query's own positives (every other passage is a
  candidate negative for it). ``teacher_scores`` [B, M] (float32, only when a row of the batch has teacher scores):
  the row's teacher score of each passage sampled for it (``pos_scores`` / ``neg_scores`` of the sampled index),
  ``-inf`` elsewhere (other rows' passages, rows without teacher scores).
* ``sts``: ``query`` = sentence 1 tokens, ``passages`` = sentence 2 tokens, ``scores`` in [0, 1]. Both sentences
  get the same prompt: the record's instruction when it has one (as the official code), else the query prompt.

Every token dict also holds ``prompt_length`` [rows]: how many leading tokens are prompt / instruction, so that
mean pooling can leave them out (``model.pool_prompt=false``, the official behaviour).

``fixed_group_size=True`` (the official CoDiEmb data layout): every IR row gets exactly ``max_positives``
positives and ``num_negatives`` hard negatives, drawn with replacement when it has fewer (a row without any
hard negative keeps none). ``False``: up to that many, without replacement.

In ``mixed`` batches an STS pair counts as a positive pair when its normalised score reaches
``sts_positive_threshold``; otherwise sentence 2 is just another candidate.

A text longer than ``max_length * CHARS_PER_TOKEN`` characters is cut to that many before tokenising (the
tokenizer would tokenise all of it and then keep ``max_length`` tokens: a 50 MB text took 107 s and 7.4 GB);
a warning per dataset says so. A WordPiece/BPE token is rarely longer than 12 characters, so the kept tokens
are the same as the uncut text's except for texts of very long unbroken "words".
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch

from codiemb.data.schema import Record
from codiemb.prompts import DEFAULT_INSTRUCTION_TEMPLATE, format_text, prompt_prefix, prompt_token_count

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 12


class Collator:
    def __init__(self, tokenizer, *, query_max_length: int = 64, passage_max_length: int = 256,
                 query_prompt: str = "", passage_prompt: str = "",
                 instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE, max_positives: int = 2,
                 num_negatives: int = 3, sts_positive_threshold: float = 0.8, seed: int = 0,
                 pad_to_multiple_of: int | None = None, fixed_group_size: bool = False):
        self.tokenizer = tokenizer
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.instruction_template = instruction_template
        self.max_positives, self.num_negatives = max_positives, num_negatives
        self.sts_positive_threshold, self.seed = sts_positive_threshold, seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.fixed_group_size = fixed_group_size
        self._prompt_lengths: dict[str, int] = {}
        self._warned_long: set[str] = set()  # datasets whose over-long texts were reported (once per process)

    def __call__(self, items: Sequence[tuple[int, Record]]) -> dict:
        position = max(p for p, _ in items)
        records = [r for _, r in items]
        tasks, sources = {r.task for r in records}, {r.dataset for r in records}
        task = tasks.pop() if len(tasks) == 1 else "mixed"
        batch = {"task": task, "dataset": sources.pop() if len(sources) == 1 else "mixed",
                 "position": position, "size": len(records)}
        query_length = self.passage_max_length if task == "sts" else self.query_max_length
        queries = [self._format(r.query, self.query_prompt, r.instruction, query_length, r.dataset)
                   for r in records]
        if task == "sts":
            # STS is symmetric: both sentences get the same prompt (the record's instruction, else the query
            # prompt) and the longer length limit.
            seconds = [self._format(r.positives[0], self.query_prompt, r.instruction, self.passage_max_length,
                                    r.dataset) for r in records]
            batch["query"] = self._tokenize(queries, self.passage_max_length)
            batch["passages"] = self._tokenize(seconds, self.passage_max_length)
            batch["scores"] = torch.tensor([r.normalized_score for r in records], dtype=torch.float32)
            return batch
        batch["query"] = self._tokenize(queries, self.query_max_length)
        rng = random.Random(self.seed * 1_000_003 + position)  # same rows -> same negatives, on every run
        passages, owners, positive, teacher = [], [], [], []
        for i, record in enumerate(records):
            for text, is_pos, score in self._passages_of(record, rng):
                passages.append(self._format(text, self.passage_prompt, None, self.passage_max_length,
                                             record.dataset))
                owners.append(i)
                positive.append(is_pos)
                teacher.append(score)
        mask = torch.zeros(len(records), len(passages), dtype=torch.bool)
        for column, (owner, is_pos) in enumerate(zip(owners, positive)):
            mask[owner, column] = is_pos
        batch["passages"] = self._tokenize(passages, self.passage_max_length)
        batch["positive_mask"] = mask
        if any(score is not None for score in teacher):
            scores = torch.full((len(records), len(passages)), float("-inf"), dtype=torch.float32)
            for column, (owner, score) in enumerate(zip(owners, teacher)):
                if score is not None:
                    scores[owner, column] = score
            batch["teacher_scores"] = scores
        return batch

    def _passages_of(self, record: Record, rng: random.Random) -> list[tuple[str, bool, float | None]]:
        """``(text, is_positive, teacher score or None)`` of each passage drawn for ``record``."""
        pos_scores, neg_scores = record.pos_scores, record.neg_scores
        if record.task == "sts":  # only reached in mixed batches
            return [(record.positives[0], record.normalized_score >= self.sts_positive_threshold,
                     None if pos_scores is None else pos_scores[0])]
        # indices, not texts: a passage's teacher score goes with the draw (same draws as sampling the texts)
        positives = self._group(range(len(record.positives)), self.max_positives, rng)
        negatives = self._group(range(len(record.negatives)), self.num_negatives, rng)
        return ([(record.positives[k], True, None if pos_scores is None else pos_scores[k]) for k in positives]
                + [(record.negatives[k], False, None if neg_scores is None else neg_scores[k]) for k in negatives])

    def _group(self, indices: range, size: int, rng: random.Random) -> list[int]:
        """Which of ``indices`` (a row's positives or negatives) to use; ``random.sample`` draws positions, so
        these are the draws sampling the texts themselves would make."""
        if len(indices) > size:
            return rng.sample(indices, size)
        if self.fixed_group_size and 0 < len(indices) < size:
            # The official get_positives / get_negatives: enough copies of the list, then `size` of them.
            return rng.sample(list(indices) * -(-size // len(indices)), size)
        return list(indices)

    def _cap(self, text: str, max_length: int | None, dataset: str | None) -> str:
        """``text`` cut to ``max_length * CHARS_PER_TOKEN`` characters (warned once per dataset)."""
        if not max_length or len(text) <= max_length * CHARS_PER_TOKEN:
            return text
        limit = max_length * CHARS_PER_TOKEN
        if dataset not in self._warned_long:
            self._warned_long.add(dataset)
            log.warning("dataset '%s': a text of %d characters is cut to %d (max_length %d x %d) before tokenising; "
                        "only its first %d tokens are used anyway (reported once per dataset)", dataset, len(text),
                        limit, max_length, CHARS_PER_TOKEN, max_length)
        return text[:limit]

    def _format(self, text: str, prompt: str, instruction: str | None, max_length: int | None = None,
                dataset: str | None = None) -> tuple[str, str]:
        text = self._cap(text, max_length, dataset)
        return (format_text(text, prompt, instruction, self.instruction_template),
                prompt_prefix(prompt, instruction, self.instruction_template))

    def _tokenize(self, texts: list[tuple[str, str]], max_length: int) -> dict[str, torch.Tensor]:
        tokens = dict(self.tokenizer([text for text, _ in texts], padding=True, truncation=True,
                                     max_length=max_length, pad_to_multiple_of=self.pad_to_multiple_of,
                                     return_tensors="pt"))
        tokens["prompt_length"] = torch.tensor(
            [prompt_token_count(self.tokenizer, prefix, self._prompt_lengths) for _, prefix in texts])
        return tokens

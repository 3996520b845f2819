"""One huge text (a 5 MB JSONL row) is cut to ``max_length * CHARS_PER_TOKEN`` characters before tokenising: the
batch is the same as for the cut text, it collates in milliseconds instead of seconds, and a warning says so once
per dataset."""

import logging
import time

import torch
from transformers import AutoTokenizer

from codiemb.data.collator import CHARS_PER_TOKEN, Collator
from codiemb.data.schema import Record
from codiemb.models.resolve import bundled_minilm_path

TOKENIZER = AutoTokenizer.from_pretrained(bundled_minilm_path())
WORDS = "the quick brown fox jumps over a lazy dog while retrieval models embed long passages "
HUGE = (WORDS * (5_000_000 // len(WORDS) + 1))[:5_000_000]


class RecordingTokenizer:
    """The real tokenizer, recording the longest text it was asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.longest = max([self.longest, *map(len, texts)])
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def ir(query, positive, dataset="big"):
    return Record("ir", query, (positive,), (), dataset=dataset)


def test_a_5_mb_text_collates_fast_and_equals_the_text_cut_to_the_cap():
    collate = Collator(TOKENIZER, query_max_length=32, passage_max_length=128)
    cap = 128 * CHARS_PER_TOKEN
    started = time.perf_counter()
    batch = collate([(0, ir("a query", HUGE)), (1, ir(HUGE, "a passage"))])
    elapsed = time.perf_counter() - started
    expected = collate([(0, ir("a query", HUGE[:cap])), (1, ir(HUGE[:32 * CHARS_PER_TOKEN], "a passage"))])
    for side in ("query", "passages"):
        for key, tensor in expected[side].items():
            assert torch.equal(batch[side][key], tensor), (side, key)
    assert batch["passages"]["input_ids"].shape[1] == 128  # still truncated to max_length tokens
    assert elapsed < 2.0, f"collating a 5 MB text took {elapsed:.1f} s"


def test_the_tokenizer_never_sees_more_than_the_cap_and_a_warning_comes_once_per_dataset(caplog):
    recording = RecordingTokenizer(TOKENIZER)
    collate = Collator(recording, query_max_length=16, passage_max_length=64)
    sts = Record("sts", HUGE, (HUGE,), score=3.0, dataset="sts_big")
    with caplog.at_level(logging.WARNING, logger="codiemb.data.collator"):
        for position in range(3):
            collate([(position, ir(HUGE, HUGE))])
            collate([(position, sts)])
    assert recording.longest <= 64 * CHARS_PER_TOKEN
    warnings = [r.getMessage() for r in caplog.records if "before tokenising" in r.getMessage()]
    assert len(warnings) == 2 and "dataset 'big'" in warnings[0] and "dataset 'sts_big'" in warnings[1]
    assert "5000000 characters is cut to 192" in warnings[0]


def test_texts_under_the_cap_are_untouched():
    recording = RecordingTokenizer(TOKENIZER)
    text = "word " * 200  # 1000 characters < 128 x 12
    Collator(recording, passage_max_length=128)([(0, ir("q", text))])
    assert recording.longest == len(text)

"""The collator's batch layout, checked against the records it was given."""

import torch
from transformers import AutoTokenizer

from codiemb.data.collator import Collator
from codiemb.data.schema import Record
from codiemb.models.resolve import bundled_minilm_path

TOKENIZER = AutoTokenizer.from_pretrained(bundled_minilm_path())


def ir(query, pos, neg=()):
    return Record("ir", query, tuple(pos), tuple(neg), dataset="d")


def decode(tokens):
    return [TOKENIZER.decode(ids, skip_special_tokens=True) for ids in tokens["input_ids"]]


def test_ir_batch_marks_exactly_each_querys_own_positives():
    records = [ir("q one", ["p1a", "p1b"], ["n1a", "n1b"]), ir("q two", ["p2a"], ["n2a"])]
    batch = Collator(TOKENIZER, num_negatives=3, max_positives=2)(list(enumerate(records)))
    assert batch["task"] == "ir" and batch["dataset"] == "d" and batch["size"] == 2
    passages = decode(batch["passages"])
    assert passages == ["p1a", "p1b", "n1a", "n1b", "p2a", "n2a"]
    expected = torch.tensor([[p in ("p1a", "p1b") for p in passages], [p == "p2a" for p in passages]])
    assert torch.equal(batch["positive_mask"], expected)


def test_negatives_and_positives_are_capped_deterministically():
    record = ir("q", ["a", "b", "c"], [f"n{i}" for i in range(10)])
    collate = Collator(TOKENIZER, num_negatives=3, max_positives=2, seed=1)
    first, again = collate([(4, record)]), collate([(4, record)])
    assert len(decode(first["passages"])) == 5 and first["positive_mask"].sum() == 2
    assert decode(first["passages"]) == decode(again["passages"])


def test_sts_batch_normalises_scores_and_pads_dynamically():
    records = [Record("sts", "a cat sits", ("a cat is sitting",), score=4.0, dataset="s"),
               Record("sts", "short", ("a much longer second sentence here",), score=1.0, score_range=(0, 2),
                      dataset="s")]
    batch = Collator(TOKENIZER)(list(enumerate(records)))
    assert batch["task"] == "sts"
    assert torch.allclose(batch["scores"], torch.tensor([0.8, 0.5]))
    lengths = batch["passages"]["attention_mask"].sum(1)
    assert batch["passages"]["input_ids"].shape[1] == int(lengths.max())  # padded to the longest, not max_length


def test_prompts_and_instructions_and_truncation():
    records = [Record("ir", "what is dna", ("dna is a molecule",), dataset="d"),
               Record("ir", "find x", ("x " * 100,), instruction="Find the passage", dataset="d")]
    batch = Collator(TOKENIZER, query_prompt="query: ", passage_prompt="passage: ", passage_max_length=16,
                     instruction_template="{instruction}: {text}")(list(enumerate(records)))
    assert decode(batch["query"]) == ["query : what is dna", "find the passage : find x"]
    assert decode(batch["passages"])[0] == "passage : dna is a molecule"
    assert batch["passages"]["input_ids"].shape[1] == 16


def test_mixed_batch_turns_clear_paraphrases_into_positives():
    records = [ir("q", ["p"], ["n"]),
               Record("sts", "s1 high", ("s2 high",), score=4.5, dataset="s"),
               Record("sts", "s1 low", ("s2 low",), score=1.0, dataset="s")]
    batch = Collator(TOKENIZER, sts_positive_threshold=0.8)(list(enumerate(records)))
    assert batch["task"] == "mixed" and batch["dataset"] == "mixed"
    assert decode(batch["passages"]) == ["p", "n", "s2 high", "s2 low"]
    assert batch["positive_mask"].tolist() == [[True, False, False, False], [False, False, True, False],
                                               [False, False, False, False]]

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


def test_sts_pairs_with_an_instruction_give_both_sentences_that_instruction():
    """Official: sentence 2 is built like sentence 1 (same task instruction); it used to get the query prompt."""
    records = [Record("sts", "a cat sits", ("a cat is sitting",), score=4.0, instruction="Retrieve paraphrases",
                      dataset="s"),
               Record("sts", "dogs run", ("a dog runs",), score=3.0, dataset="s")]
    batch = Collator(TOKENIZER, query_prompt="query: ", instruction_template="{instruction}: {text}")(
        list(enumerate(records)))
    assert decode(batch["query"]) == ["retrieve paraphrases : a cat sits", "query : dogs run"]
    assert decode(batch["passages"]) == ["retrieve paraphrases : a cat is sitting", "query : a dog runs"]
    instruction_tokens = 1 + len(TOKENIZER.tokenize("Retrieve paraphrases:"))  # [CLS] + its word pieces
    assert batch["query"]["prompt_length"].tolist() == batch["passages"]["prompt_length"].tolist() \
        == [instruction_tokens, 3]


def test_prompt_lengths_count_the_prompt_tokens_and_agree_with_the_encoder(tiny):
    """[CLS] + the prompt's tokens (sentence-transformers' count); what the encoder computes at inference."""
    records = [Record("ir", "what is dna", ("dna is a molecule",), dataset="d"),
               Record("ir", "find x", ("x y",), instruction="Find the passage", dataset="d")]
    collate = Collator(TOKENIZER, query_prompt="query: ", passage_prompt="passage: ",
                       instruction_template="{instruction}: {text}")
    batch = collate(list(enumerate(records)))
    assert batch["query"]["prompt_length"].tolist() == [3, 5]  # [CLS] query : / [CLS] find the passage :
    assert batch["passages"]["prompt_length"].tolist() == [3, 3]
    assert Collator(TOKENIZER)(list(enumerate(records[:1])))["query"]["prompt_length"].tolist() == [0]
    tiny.query_prompt, tiny.passage_prompt, tiny.instruction_template = "query: ", "passage: ", "{instruction}: {text}"
    try:
        assert tiny.prompt_lengths("query", [None, "Find the passage"]) == [3, 5]
        assert tiny.prompt_lengths("passage", [None, None]) == [3, 3]
    finally:
        tiny.query_prompt, tiny.passage_prompt, tiny.instruction_template = "", "", "{instruction} {text}"


def test_fixed_group_size_fills_every_group_with_replacement_as_the_release():
    records = [ir("q1", ["p1"], ["n1a", "n1b"]), ir("q2", ["p2a", "p2b", "p2c"], [f"n2{i}" for i in range(9)]),
               ir("q3", ["p3a", "p3b"], [])]
    batch = Collator(TOKENIZER, max_positives=2, num_negatives=4, fixed_group_size=True, seed=3)(
        list(enumerate(records)))
    passages, mask = decode(batch["passages"]), batch["positive_mask"]
    assert mask.sum(1).tolist() == [2, 2, 2]  # every query: exactly 2 positives (q1's one, twice)
    owners = [[p for p in passages if p.startswith(f"{c}")] for c in ("p1", "n1", "p2", "n2", "p3", "n3")]
    assert owners[0] == ["p1", "p1"] and len(owners[1]) == 4 and set(owners[1]) == {"n1a", "n1b"}
    assert len(owners[2]) == 2 == len(set(owners[2])) and len(owners[3]) == 4 == len(set(owners[3]))
    assert sorted(owners[4]) == ["p3a", "p3b"] and owners[5] == []  # no negatives to draw from: none
    loose = Collator(TOKENIZER, max_positives=2, num_negatives=4)(list(enumerate(records)))
    assert loose["positive_mask"].sum(1).tolist() == [1, 2, 2] and len(decode(loose["passages"])) == 3 + 6 + 2

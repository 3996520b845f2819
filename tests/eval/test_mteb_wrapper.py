"""The MTEB adapter, run by ``mteb.evaluate`` on tasks defined here from local data (no hub access)."""

from __future__ import annotations

import pytest

mteb = pytest.importorskip("mteb")
from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.sts import AbsTaskSTS  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from codiemb.data.readers.stsb import load_stsb_pairs  # noqa: E402
from codiemb.eval.mteb import MTEBEncoder  # noqa: E402
from codiemb.eval.sts import evaluate_sts  # noqa: E402

from .conftest import SHARED, tiny_encoder  # noqa: E402


def local_sts_task(name: str, s1, s2, scores):
    """An MTEB STS task whose data is given in memory (MTEB's own mock tasks are built the same way)."""

    class LocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(
            name=name, description="Local STS pairs read by codiemb.", reference="https://example.invalid",
            dataset={"path": "local", "revision": "local"}, type="STS", category="t2t", modalities=["text"],
            eval_splits=["test"], eval_langs=["eng-Latn"], main_score="cosine_spearman",
            date=("2017-01-01", "2017-12-31"), domains=[], task_subtypes=[], license="cc-by-sa-4.0",
            annotations_creators="human-annotated", dialect=[], sample_creation="found", bibtex_citation="")
        min_score, max_score = 0, 5

        def load_data(self, **_):
            self.dataset = DatasetDict({"test": Dataset.from_dict(
                {"sentence1": list(s1), "sentence2": list(s2), "score": list(scores)})})
            self.data_loaded = True

    return LocalSTS()


def mteb_spearman(model, task) -> float:
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    return 100 * result.task_results[0].scores["test"][0]["cosine_spearman"]


def test_mteb_gives_the_project_evaluator_number_on_a_local_task(tiny_sets):
    from codiemb.eval.sets import load_set, parse_sets
    data = load_set(parse_sets(tiny_sets)[0])
    encoder = tiny_encoder()
    task = local_sts_task("LocalTinySTS", data.sentences1, data.sentences2, data.scores)
    ours = evaluate_sts(encoder, data.sentences1, data.sentences2, data.scores)["spearman"]
    assert mteb_spearman(MTEBEncoder(encoder, name="tiny"), task) == pytest.approx(ours, abs=1e-4)


def test_prompt_type_mapping():
    from mteb.types import PromptType
    assert MTEBEncoder.kind_for(PromptType.document) == "passage"
    assert MTEBEncoder.kind_for(PromptType.query) == MTEBEncoder.kind_for(None) == "query"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_mteb_reproduces_the_stsb_anchor_with_the_bundled_model():
    s1, s2, scores = load_stsb_pairs(str(SHARED / "stsbenchmark" / "sts-test.csv"))
    model = MTEBEncoder.from_pretrained("bundled:all-MiniLM-L6-v2")
    assert mteb_spearman(model, local_sts_task("LocalSTSBenchmark", s1, s2, scores)) == pytest.approx(82.03, abs=0.05)

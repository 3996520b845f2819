"""One scorer for every stage that ranks models on validation sets: the training run's merge stage and its
delivered model, ``merge.evaluate``, the greedy soup and a sweep's fusion."""

from __future__ import annotations

from collections.abc import Callable

Scorer = Callable[[str], dict[str, float]]


def validation_scorer(sets, autocast_dtype=None) -> Scorer:
    """``model_dir -> {"val/<metric>": value}`` on ``sets`` (``val/mean`` is the number to maximise), encoded in
    fp32 or under ``autocast_dtype`` (a training run passes its validation callback's, so that the merged model is
    scored as its exports were)."""
    from codiemb.eval.runner import evaluate_model_dir

    def score(model_dir: str) -> dict[str, float]:
        summary = evaluate_model_dir(model_dir, sets, autocast_dtype=autocast_dtype)["summary"]
        return {f"val/{k}": v for k, v in summary.items()}
    return score

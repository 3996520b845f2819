"""One scorer for every stage that ranks models on validation sets: the training run's merge stage and its
delivered model, ``merge.evaluate``, the greedy soup and a sweep's fusion."""

from __future__ import annotations

from collections.abc import Callable

Scorer = Callable[[str], dict[str, float]]


def validation_scorer(sets) -> Scorer:
    """``model_dir -> {"val/<metric>": value}`` on ``sets`` (``val/mean`` is the number to maximise)."""
    from codiemb.eval.runner import evaluate_model_dir

    def score(model_dir: str) -> dict[str, float]:
        return {f"val/{k}": v for k, v in evaluate_model_dir(model_dir, sets)["summary"].items()}
    return score

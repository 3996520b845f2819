"""Greedy soup (Wortsman et al., "Model soups", ICML 2022, Recipe 1).

Sort the checkpoints by their own validation score, best first. Start the soup with the best one; try each
of the others in that order and keep it only if the uniform average of ``soup + [candidate]`` scores at least
as well as the soup did (``>=``, as in the paper). The soup is then the uniform average of its members.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


def greedy_soup_select(individual_scores: Sequence[float],
                       soup_score: Callable[[list[int]], float]) -> dict:
    """Pick soup members.

    ``individual_scores[i]`` is checkpoint i's validation score; ``soup_score(members)`` scores the uniform
    average of the listed checkpoints (higher is better). Returns ``{"order", "members", "score", "steps"}``
    with members in the order they were added.
    """
    if not individual_scores:
        raise ValueError("greedy soup needs at least one checkpoint")
    # Stable sort: on equal scores the earlier checkpoint comes first.
    order = sorted(range(len(individual_scores)), key=lambda i: -individual_scores[i])
    members, best = [order[0]], float(individual_scores[order[0]])
    steps = [{"candidate": order[0], "score": best, "kept": True}]
    for candidate in order[1:]:
        score = float(soup_score(members + [candidate]))
        kept = score >= best
        steps.append({"candidate": candidate, "score": score, "kept": kept})
        log.info("greedy soup: +checkpoint %d -> %.6g (%s, soup was %.6g)", candidate, score,
                 "kept" if kept else "dropped", best)
        if kept:
            members.append(candidate)
            best = score
    return {"order": order, "members": members, "score": best, "steps": steps}

"""Post-training weight merging (CoDiEmb delta merge and baselines) on exported safetensors model directories.

This package never imports ``codiemb.models``: it works on state dicts, so it merges any encoder quickly.
"""

from codiemb.merge.api import merge_from_config, merge_models
from codiemb.merge.methods import dare, delta_merge, task_arithmetic, ties, uniform

__all__ = ["dare", "delta_merge", "merge_from_config", "merge_models", "task_arithmetic", "ties", "uniform"]

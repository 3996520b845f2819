"""``print_config: true``: the composed config as a tree (rich), as lightning-hydra-template prints it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# The groups a reader looks for first; the rest follow in config order.
ORDER = ("data", "model", "task_mix", "loss", "module", "trainer", "callbacks", "logger", "merge", "val", "paths")


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    """Print every top-level node of ``cfg`` (except ``hydra``) as a branch with its YAML."""
    import rich
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("CONFIG", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER and k != "hydra"]
    for key in keys:
        node: Any = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=resolve) if OmegaConf.is_config(node) else str(node)
        tree.add(str(key)).add(Syntax(text, "yaml"))
    rich.print(tree)

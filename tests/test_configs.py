"""Every config group composes from the real configs/ and instantiates (without a network)."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from codiemb.data.sampler import POLICIES
from tests.conftest import ROOT, TINY

GROUPS = ROOT / "configs"


def options(group):
    return sorted(p.stem for p in (GROUPS / group).glob("*.yaml"))


def test_default_config_composes_to_the_offline_defaults(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.name_or_path == "bundled:all-MiniLM-L6-v2"
    assert cfg.task_mix.policy == "balanced" and cfg.data.task_mix == "balanced"
    assert cfg.trainer.use_distributed_sampler is False
    assert Path(cfg.paths.output_dir).is_dir()


def test_the_default_run_draws_length_grouped_steps(compose_cfg, tmp_path):
    """Measured on the real recipe (BENCHMARKS.md, section 2.3) first: 1.18x faster, the same scores."""
    from hydra.utils import instantiate

    cfg = compose_cfg([f"data.cache_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    dm.load()
    sampler = dm.build_sampler()
    assert sampler.state_dict()["length_grouping"] is True
    grouped = [[len(row.query) for _, row in dm.dataset.__getitems__(step)] for step in list(sampler)[:20]]
    dm_plain = instantiate(compose_cfg([f"data.cache_dir={tmp_path}", "data.length_grouping=false"]).data)
    dm_plain.load()
    plain = [[len(row.query) for _, row in dm_plain.dataset.__getitems__(step)]
             for step in list(dm_plain.build_sampler())[:20]]
    spread = lambda steps: sum(max(s) - min(s) for s in steps if s) / len(steps)  # noqa: E731
    assert spread(grouped) < spread(plain)


@pytest.mark.parametrize("name", options("task_mix"))
def test_task_mix_options_are_known_policies(compose_cfg, name):
    assert compose_cfg([f"task_mix={name}"]).data.task_mix in POLICIES


@pytest.mark.parametrize("name", options("loss"))
def test_loss_options_instantiate(compose_cfg, name):
    cfg = compose_cfg([f"loss={name}"])
    ir, sts = instantiate(cfg.loss.ir), instantiate(cfg.loss.sts)
    assert callable(ir) and callable(sts)
    assert hasattr(sts, "needs_middle_layer")


@pytest.mark.parametrize("name", ["minilm", "bge", "e5", "gte"])
def test_bert_family_model_configs_accept_a_local_path(compose_cfg, name):
    """Hub names need a network; every config must also work from a local directory."""
    overrides = [f"model={name}", "model.name_or_path=bundled:all-MiniLM-L6-v2", "+model.random_init=true"]
    overrides += [f"+model.config_overrides.{k}={v}" for k, v in TINY.items()]
    cfg = compose_cfg(overrides)
    encoder = instantiate(cfg.model)
    assert encoder.pooling == cfg.model.pooling and encoder.query_prompt == cfg.model.query_prompt


@pytest.mark.parametrize("name", options("model"))
def test_every_model_config_composes(compose_cfg, name):
    cfg = compose_cfg([f"model={name}"])
    assert cfg.model._target_.endswith("Encoder.from_pretrained")
    assert cfg.model.pooling in ("mean", "cls", "last_token", "weighted_mean")


@pytest.mark.parametrize("name", ["default", "cpu", "ddp_cpu_sim"])
def test_cpu_trainers_instantiate(compose_cfg, name):
    """As train() builds them: ``precision: auto`` is resolved for this machine first."""
    from codiemb.run.plan import build_plan

    cfg = compose_cfg([f"trainer={name}"])
    build_plan(cfg)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.num_devices * trainer.num_nodes >= 1


@pytest.mark.parametrize("name", options("trainer"))
def test_every_trainer_config_composes(compose_cfg, name):
    assert compose_cfg([f"trainer={name}"]).trainer._target_ == "lightning.pytorch.trainer.Trainer"


@pytest.mark.parametrize("name", [n for n in options("logger") if n != "none"])
def test_loggers_instantiate_offline(compose_cfg, name):
    from codiemb.run.train import instantiate_group

    loggers = instantiate_group(compose_cfg([f"logger={name}"]).logger)
    assert loggers


def test_callbacks_instantiate(compose_cfg):
    from codiemb.run.train import instantiate_group

    kinds = {type(c).__name__ for c in instantiate_group(compose_cfg().callbacks)}
    assert {"StepCheckpoint", "PeriodicExport", "LearningRateMonitor"} <= kinds


def test_example_data_config_loads_and_builds_a_sampler(compose_cfg):
    datamodule = instantiate(compose_cfg().data)
    datamodule.load()
    tasks = {info["task"] for info in datamodule.load_report.values()}
    assert tasks == {"ir", "sts"}
    assert len(datamodule.build_sampler()) > 0


def declared_values(group: str, name: str) -> dict[tuple, object]:
    """The leaf values a group file sets itself (not its defaults list, not interpolations), keyed by their full
    path in the composed config: ``# @package _global_`` files at the root, the others under the group's name."""
    from omegaconf import OmegaConf

    path = GROUPS / group / f"{name}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node.pop("defaults", None)
    prefix = () if "# @package _global_" in path.read_text() else (group,)
    leaves: dict[tuple, object] = {}

    def walk(value, key):
        if isinstance(value, dict) and value:
            for child, inner in value.items():
                walk(inner, (*key, str(child)))
        elif not (isinstance(value, str) and "${" in value):
            leaves[prefix + key] = value
    walk(node, ())
    return leaves


GROUP_FILES = [(g, n) for g in ("debug", "experiment", "merge", "fuse", "trainer", "task_mix", "hparams_search")
               for n in options(g) if not n.startswith("_")]


@pytest.mark.parametrize(("group", "name"), GROUP_FILES, ids=[f"{g}={n}" for g, n in GROUP_FILES])
def test_every_group_file_sets_what_it_declares(compose_cfg, group, name):
    """Choosing a group file puts each value it declares into the composed config, where the code reads it (a
    file without ``# @package _global_`` once left ``debug=fdr``'s ``trainer.max_steps`` under ``debug.``)."""
    from omegaconf import OmegaConf

    cfg = compose_cfg([f"{'+' if group == 'fuse' else ''}{group}={name}"])  # fuse is not in the defaults list
    if group in ("debug", "experiment", "hparams_search", "fuse"):  # these set keys across the whole config
        assert "# @package _global_" in (GROUPS / group / f"{name}.yaml").read_text(), f"{group}/{name}.yaml"
    declared = declared_values(group, name)
    assert declared, f"{group}/{name}.yaml declares nothing"
    for path, value in declared.items():
        key, got = ".".join(path), cfg
        for part in path:
            got = got.get(part, "<absent>") if OmegaConf.is_config(got) else "<absent>"
        got = OmegaConf.to_container(got, resolve=False) if OmegaConf.is_config(got) else got
        got = getattr(got, "name", got)  # Hydra's enums (hydra.mode: MULTIRUN)
        assert got == value, f"{group}={name}: {key} is {got!r}, the file sets {value!r}"


def test_debug_runs_are_short_and_apart(compose_cfg):
    """debug=default: verbose, one epoch, anomaly detection, no workers, outputs under logs/debug;
    debug=fdr: two optimizer steps with a checkpoint at each."""
    cfg = compose_cfg(["debug=default"])
    assert cfg.task_name == "debug" and cfg.trainer.detect_anomaly is True and cfg.data.num_workers == 0
    assert cfg.trainer.max_epochs == 1 and cfg.print_config is True
    fdr = compose_cfg(["debug=fdr"])
    assert fdr.trainer.max_steps == 2 and fdr.checkpoint_every_n_steps == 1 and fdr.task_name == "debug"
    assert fdr.merge.method == "none"
    assert "debug" not in fdr  # nothing left under a `debug:` node that no code reads


def test_real_cpu_recipe_mines_ir_training_data_and_never_validates_on_a_test_split(compose_cfg):
    from omegaconf import OmegaConf

    from codiemb.data.readers import get_reader
    from codiemb.mining.cache import resolve_mined_specs

    cfg = compose_cfg(["experiment=real_cpu"])
    specs = OmegaConf.to_container(cfg.data.datasets, resolve=True)
    assert {s["task"] for s in specs} == {"ir", "sts"}
    for spec in specs:
        get_reader(spec["format"])  # every format is known
    mined = [s for s in specs if s.get("mine")]
    assert [s["name"] for s in mined] == ["scifact_train", "pubmedqa_train"]
    assert all(s["split"] == "train" and s["mine"]["output"].startswith(cfg.paths.log_dir) for s in mined)
    # with the caches missing, another rank refuses (rank 0 would mine); nothing is written
    for spec in mined:
        spec["mine"]["output"] += ".absent"
    with pytest.raises(Exception, match="missing or stale and rank 1 does not mine"):
        resolve_mined_specs(mined, OmegaConf.to_container(cfg.model, resolve=True), rank=1)
    # validation: STS-B dev and the held-back train queries, the same 10% the training side drops
    val = OmegaConf.to_container(cfg.val, resolve=True)["sets"]
    assert [v["name"] for v in val] == ["stsb_dev", "scifact_holdout"]
    assert val[0]["path"].endswith("sts-dev.csv") and val[1]["split"] == "train"
    assert val[1]["holdout_fraction"] == next(s for s in specs if s["name"] == "scifact_train")["holdout"]["fraction"]


def test_print_config_prints_the_composed_tree(compose_cfg, capsys):
    """``print_config: true`` (debug=default) prints each group with its resolved values before the run."""
    from codiemb.utils.config_tree import print_config_tree

    print_config_tree(compose_cfg(["debug=fdr", "module.lr=0.123"]))
    out = capsys.readouterr().out
    assert out.index("data") < out.index("model") < out.index("trainer")
    assert "max_steps: 2" in out and "lr: 0.123" in out and "hydra" not in out.split("\n", 1)[0]

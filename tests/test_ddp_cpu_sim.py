"""`trainer=ddp_cpu_sim`: 2 spawned gloo processes train and log the same metric names as one process."""

from pathlib import Path

import pytest

from codiemb.run.train import train
from tests.test_train import FAST, logged_keys


@pytest.mark.slow
def test_ddp_cpu_sim_trains_and_logs_the_single_process_metric_names(compose_cfg, tmp_path):
    # round_robin alternates IR and STS, so both runs see both tasks within 4 steps
    single_cfg = compose_cfg(FAST + ["merge=none", "task_mix=round_robin"])
    train(single_cfg)
    ddp_cfg = compose_cfg(FAST + ["merge=none", "task_mix=round_robin", "trainer=ddp_cpu_sim",
                                  "loss.ir.cross_device=true", "loss.sts.cross_device=true"])
    ddp_cfg.paths.output_dir = str(tmp_path / "ddp")
    result = train(ddp_cfg)
    assert [Path(p).name for p in result["exports"]] == ["step_000002", "step_000004"]
    single, ddp = logged_keys(Path(single_cfg.paths.output_dir)), logged_keys(Path(ddp_cfg.paths.output_dir))
    assert {k for k in single if not k.endswith("wall_s")} == {k for k in ddp if not k.endswith("wall_s")}

"""Every shipped trainer YAML merges into our config (typos in keys would fail here)."""
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed: the trainer configs extend Dassl's defaults")

from loreal.config import from_mapping  # noqa: E402
from loreal.method import LorealConfig  # noqa: E402
from loreal.trainers.config import get_cfg  # noqa: E402

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs/trainers").glob("*/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_trainer_yaml_merges(path):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    if path.parent.name.endswith("_LOREAL"):
        config = from_mapping(LorealConfig, cfg.TRAINER.LOREAL)
        assert config.k == 5 and config.m == 2
        assert cfg.OPTIM.NAME == "sgd" and cfg.OPTIM.LR == 0.002


def test_every_loreal_config_has_its_baseline_counterpart():
    for path in CONFIGS:
        if path.parent.name.endswith("_LOREAL") and path.stem != "test_tiny":
            baseline = path.parent.name.removesuffix("_LOREAL")
            assert (path.parents[1] / baseline / path.name).is_file(), path


@pytest.mark.parametrize("trainer", ["CoOp", "MaPLe", "MMA", "MMRL", "CoOp_LOREAL", "MaPLe_LOREAL", "MMA_LOREAL",
                                     "MMRL_LOREAL"])
def test_tiny_configs_keep_the_shipped_precision(trainer):
    """The end-to-end tests run the tiny configs: they must run in the precision users' configs ask for."""
    from loreal.baselines import get_baseline

    node = get_baseline(trainer.removesuffix("_LOREAL")).config_cls.yacs_node

    def prec(path):
        cfg = get_cfg()
        cfg.merge_from_file(str(path))
        return cfg.TRAINER[node].PREC

    folder = CONFIGS[0].parents[1] / trainer
    shipped = {prec(p) for p in folder.glob("*.yaml") if p.stem != "test_tiny"}
    assert shipped == {prec(folder / "test_tiny.yaml")}

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


IMAGENET = {"CoOp": "vit_b16_ep50", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", "MMA": "vit_b16_ep5_imnet",
            "MMRL": "vit_b16_cross_datasets"}
PROMPT_MIB = 15  # ViT-B/16 text graph per prompt in fp32, K 5 (`loreal bench memory`, README "ImageNet")


@pytest.mark.parametrize("baseline", sorted(IMAGENET))
def test_imagenet_configs_fit_one_80gb_gpu(baseline):
    root = CONFIGS[0].parents[1]
    cfg, base = get_cfg(), get_cfg()
    cfg.merge_from_file(str(root / f"{baseline}_LOREAL/{IMAGENET[baseline]}.yaml"))
    base.merge_from_file(str(root / f"{baseline}/{IMAGENET[baseline]}.yaml"))
    config = from_mapping(LorealConfig, cfg.TRAINER.LOREAL)
    batch = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    assert batch == base.DATALOADER.TRAIN_X.BATCH_SIZE  # the baseline's ImageNet batch
    chunk = int(config.memory_budget * 1024 // (batch * PROMPT_MIB))
    assert config.class_chunk == 0 and chunk >= 1  # the chunk comes from the budget and holds a class
    # Evaluation takes its chunk by the same rule at the test batch size (each test batch encodes B × 1000 prompts)
    assert int(config.memory_budget * 1024 // (cfg.DATALOADER.TEST.BATCH_SIZE * PROMPT_MIB)) >= 1
    assert config.memory_budget + 8 <= 80  # graph budget plus CLIP, features and working memory

"""The world bench's fair budget: every LOREAL world config trains as many optimiser steps as its β."""
import pytest
import torch
import yaml

from loreal.errors import ConfigError
from loreal.world.budget import budgets, check_budgets, config_steps, optimiser_steps, train_images

PAIRS = ["CoOp", "CoCoOp", "KgCoOp", "MaPLe", "PromptSRC", "MMA", "MMRL"]


@pytest.mark.parametrize("images,batch,epochs", [(288, 32, 50), (288, 4, 5), (288, 16, 5), (288, 1, 2), (20, 32, 3),
                                                 (33, 32, 2)])
def test_steps_are_what_a_drop_last_loader_gives(images, batch, epochs):
    loader = torch.utils.data.DataLoader(list(range(images)), batch_size=batch, drop_last=images >= batch)
    assert optimiser_steps(batch, epochs, images) == len(loader) * epochs


def test_the_world_trains_on_the_base_classes_shots():
    assert train_images() == 16 * 18


@pytest.mark.parametrize("baseline", PAIRS)
def test_every_shipped_loreal_world_config_gets_its_betas_steps(baseline):
    (row,) = check_budgets([baseline])
    assert row.loreal_steps >= row.beta_steps > 0
    with open(f"configs/trainers/{baseline}_LOREAL/world.yaml") as f:
        head = f.read(400)
    assert f"of {baseline}/world.yaml" in head  # the rule is stated where the numbers are


def test_an_unfair_config_is_refused_naming_the_fix(tmp_path, monkeypatch):
    import loreal.pipeline.configs as configs

    real = configs.trainer_config

    def short_loreal(trainer, config):
        path = real(trainer, config)
        if trainer != "MaPLe_LOREAL":
            return path
        data = yaml.safe_load(open(path))
        data["OPTIM"]["MAX_EPOCH"] = 2
        out = tmp_path / "world.yaml"
        out.write_text(yaml.safe_dump(data))
        return str(out)

    monkeypatch.setattr(configs, "trainer_config", short_loreal)
    assert budgets(["MaPLe"])[0].loreal_steps == config_steps("MaPLe") * 2 // 5
    with pytest.raises(ConfigError, match=r"MaPLe_LOREAL/world.yaml gives 144 against β's 360 \(give it MaPLe/world"):
        check_budgets(["CoOp", "MaPLe"])

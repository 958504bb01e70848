"""The world CLIP shipped inside the package: it rebuilds exactly, serves a cold cache, and passes the gates."""
import json

import pytest
import torch

from loreal.errors import CheckpointError
from loreal.world.embedded import WEIGHTS, export, rebuild, shipped_record, state_digest
from loreal.world.pretrain import PretrainSettings, checkpoint_path, pretrain, pretrained_clip, read_record

SMALL = PretrainSettings(steps=3, batch_size=16, layers=1)


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    model = pretrain(SMALL, log=lambda _: None)
    path = tmp_path_factory.mktemp("shipped") / "world_clip.pt"
    return model, path, export(model, SMALL, path, {"world_version": 0, "zero_shot": {}})


def test_export_stores_the_changed_token_rows_only_and_rebuilds_the_model_exactly(small_export):
    model, path, record = small_export
    # three steps of 16 captions touch a few dozen of the 49,408 token rows; the rest are their seeded init
    assert 10 < record["token_rows"] < 200
    assert path.stat().st_size < 0.1 * 49408 * model.token_embedding.weight.shape[1] * 4
    rebuilt, read = rebuild(path)
    assert read["digest"] == state_digest(model.state_dict()) == state_digest(rebuilt.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], value), name


def test_a_damaged_or_foreign_file_is_refused(small_export, tmp_path):
    _, path, record = small_export
    damaged = tmp_path / "world_clip.pt"
    damaged.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    damaged.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="damaged"):
        rebuild(damaged)
    # a right file whose weights do not rebuild to the recorded model (e.g. another torch's initialisation)
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(path.read_bytes())
    wrong.with_suffix(".json").write_text(json.dumps({**record, "digest": "0" * 64}))
    with pytest.raises(CheckpointError, match="--retrain"):
        rebuild(wrong)


@pytest.mark.skipif(shipped_record() is None, reason="no world CLIP shipped in this checkout")
def test_a_cold_cache_takes_the_shipped_model_without_pre_training(tmp_path, monkeypatch):
    import loreal.world.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: pytest.fail("pre-trained although one is shipped"))
    settings = PretrainSettings.from_dict(shipped_record()["settings"])
    assert settings == PretrainSettings()  # the default (demo, bench, check) is the shipped one
    path = pretrained_clip(settings, folder=tmp_path, log=lambda _: None)
    assert path == checkpoint_path(settings, tmp_path)
    record = read_record(path)
    assert record["source"] == "shipped" and record["digest"] == shipped_record()["digest"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state_digest(state) == record["digest"]


def test_the_shipped_file_is_packaged_and_small():
    assert WEIGHTS.is_file(), "the world CLIP must ship with the package (loreal world pretrain --retrain --export)"
    assert WEIGHTS.stat().st_size < 4 * 2**20


def test_retrain_never_overwrites_a_file_without_force(tmp_path, monkeypatch, capsys):
    from loreal.cli import main

    import loreal.world.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: pytest.fail("trained before checking --out"))
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"a user's checkpoint")
    assert main(["world", "pretrain", "--retrain", "--out", str(mine)]) == 2
    assert "exists" in capsys.readouterr().err and mine.read_bytes() == b"a user's checkpoint"

"""Loading a student's checkpoint without Dassl: resolution in Dassl's layout and the clear errors."""
import pytest
import torch

from loreal.baselines.coop import CoOpConfig, CoOpLearner
from loreal.checkpoints import load_learner_checkpoint, read_checkpoint, resolve_checkpoint
from loreal.errors import CheckpointError, MissingFileError

CLASSES = ["cat", "dog"]


def save(path, state, meta=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 2, **({"meta": meta} if meta else {})}, path)


@pytest.fixture
def learner(promptable):
    return CoOpLearner(promptable, CLASSES, CoOpConfig(n_ctx=4))


def test_folder_resolves_to_the_newest_epoch_and_loads(tmp_path, learner):
    ctx = torch.randn_like(learner.ctx)
    save(tmp_path / "run/prompt_learner/model.pth.tar-1", {"ctx": torch.zeros_like(ctx)})
    save(tmp_path / "run/prompt_learner/model.pth.tar-2", {"ctx": ctx}, {"baseline": "CoOp"})
    file = load_learner_checkpoint(learner, str(tmp_path / "run"))
    assert file.endswith("model.pth.tar-2") and torch.equal(learner.ctx, ctx)
    assert resolve_checkpoint(str(tmp_path / "run"), ["prompt_learner"], epoch=1).endswith("model.pth.tar-1")


def test_upstream_file_with_class_buffers_loads(tmp_path, learner):
    ctx = torch.randn_like(learner.ctx)
    upstream = {"ctx": ctx, "token_prefix": torch.zeros(2, 1, 8), "token_suffix": torch.zeros(2, 72, 8)}
    save(tmp_path / "up/prompt_learner/model.pth.tar-50", upstream)
    load_learner_checkpoint(learner, str(tmp_path / "up"))
    assert torch.equal(learner.ctx, ctx)


@pytest.mark.parametrize("layout,message", [
    ("LOREAL/model.pth.tar-1", "points at a LOREAL run"),
    ("MultiModalPromptLearner/model.pth.tar-5", "is a MaPLe checkpoint, but this run trains CoOp"),
    (None, "ALPHA: no checkpoint at"),
])
def test_wrong_or_missing_runs_are_named(tmp_path, learner, layout, message):
    if layout:
        save(tmp_path / "run" / layout, {"x": torch.zeros(1)})
    with pytest.raises((CheckpointError, MissingFileError), match=message):
        load_learner_checkpoint(learner, str(tmp_path / "run"), what="ALPHA")


def test_meta_of_another_baseline_or_a_loreal_file_is_refused(tmp_path, learner):
    save(tmp_path / "a.pth", {"ctx": learner.ctx.detach()}, {"baseline": "MMA"})
    with pytest.raises(CheckpointError, match="is a MMA checkpoint"):
        load_learner_checkpoint(learner, str(tmp_path / "a.pth"))
    save(tmp_path / "b.pth", {"nets.0.0.weight": torch.zeros(1)}, {"baseline": "CoOp", "loreal": {"k": 5}})
    with pytest.raises(CheckpointError, match="points at a LOREAL checkpoint"):
        load_learner_checkpoint(learner, str(tmp_path / "b.pth"))


class Evil:
    """Any class outside the allow-list."""


def test_arbitrary_pickles_stay_refused(tmp_path):
    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(str(tmp_path / "evil.pth"))

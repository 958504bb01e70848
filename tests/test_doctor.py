"""`loreal doctor`: a row per trainer with its measurements, verdicts that name the fix, errors against fp32."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from loreal.baselines import PromptModel, create_learner, list_baselines
from loreal.bench.fixtures import classnames
from loreal.cli import main as loreal_main
from loreal.clip import build_tiny_clip, load_clip
from loreal.doctor.checks import Backbones, Options, build_model, check_trainer, verdict
from loreal.doctor.configs import choose_configs, default_config, read_setup, shipped_configs, trainers_of
from loreal.method import LorealModel

QUICK = ["-C", "3", "-B", "2", "--test-batch", "2", "--size", "32"]
FIELDS = ("trainer", "config", "precision_ran", "classes", "train_batch", "test_batch", "size", "loss",
          "loss_rel_err", "logits_rel_err", "held_mb", "train_peak_mb", "eval_peak_mb", "train_ms", "eval_ms",
          "verdict", "problems", "fixes")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """The narrow tiny CLIP as a plain state-dict file: reached through --backbone, the users' loading code."""
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(build_tiny_clip(seed=0, embed_dim=32, vision_width=64, text_width=64).state_dict(), path)
    return str(path)


def run_doctor(capsys, *argv):
    code = loreal_main(["doctor", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_row_per_baseline_and_its_loreal_with_the_fields(clip_file, capsys, monkeypatch):
    monkeypatch.delenv("LOREAL_CPU_AUTOCAST", raising=False)
    code, result = run_doctor(capsys, "--backbone", clip_file, *QUICK)
    rows = result["rows"]
    assert [r["trainer"] for r in rows] == [t for b in list_baselines() for t in (b, f"{b}_LOREAL")]
    for row in rows:
        assert row["error"] is None, row
        assert all(key in row for key in FIELDS), row
        assert (row["classes"], row["train_batch"], row["test_batch"], row["size"]) == (3, 2, 2, 32)
        assert row["train_peak_mb"] > 0 and row["eval_peak_mb"] > 0 and row["train_ms"] > 0
        assert torch.isfinite(torch.tensor(row["loss"]))
        # On the CPU every shipped precision (fp16, amp) falls back to fp32, as the trainers do: nothing to compare.
        assert row["precision"] == "fp32" and "falls back on cpu" in row["precision_ran"]
        assert row["loss_rel_err"] is None and row["logits_rel_err"] is None
    loreal = [r for r in rows if r["trainer"].endswith("_LOREAL")]
    assert all(r["memory_budget_gib"] > 0 for r in loreal)
    assert code == (0 if result["passed"] else 1)


def test_the_table_names_each_trainer_and_its_verdict(clip_file, capsys):
    code = loreal_main(["doctor", "--backbone", clip_file, "--baselines", "CoOp", "--config", "vit_b16_ep50", *QUICK,
                        "--device-memory", "0.02"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| CoOp")]
    assert len(lines) == 2 and all("FAIL" in line and "lower DATALOADER" in line for line in lines)
    assert code == 1


def test_too_little_device_memory_fails_with_the_fix_named(clip_file, capsys):
    # The narrow tiny CLIP's weights take 17 MiB; CoOp's step (16 context tokens) 3 MiB more, CoOp_LOREAL's 13 MiB more.
    code, result = run_doctor(capsys, "--backbone", clip_file, "--baselines", "CoOp", "--config", "vit_b16_ep50", *QUICK,
                              "--device-memory", "0.02")
    assert code == 1 and not result["passed"]
    coop, coop_loreal = result["rows"]
    assert coop["verdict"] == coop_loreal["verdict"] == "FAIL"
    assert any("training needs" in p for p in coop["problems"])
    assert any(f.startswith("lower DATALOADER.TRAIN_X.BATCH_SIZE") for f in coop["fixes"])
    # LOREAL: the shipped 40 GiB budget cannot hold on a 20 MiB device
    assert any(f.startswith("set TRAINER.LOREAL.MEMORY_BUDGET ≤ 0.00") for f in coop_loreal["fixes"])



def test_a_budget_too_small_for_one_class_fails_the_loreal_row_only(clip_file, capsys):
    code, result = run_doctor(capsys, "--backbone", clip_file, "--baselines", "MaPLe", *QUICK,
                              "--opts", "TRAINER.LOREAL.MEMORY_BUDGET", "0.000001")
    maple, maple_loreal = result["rows"]
    assert maple["verdict"] == "ok"
    assert maple_loreal["verdict"] == "FAIL" and code == 1
    assert "training step" in maple_loreal["error"] and "raise MEMORY_BUDGET" in maple_loreal["error"]


def _row(**kw):
    base = {"trainer": "CoOp_LOREAL", "precision": "fp16", "requested_precision": "fp16", "train_batch": 32,
            "test_batch": 100, "device_memory_mb": 10 * 1024.0, "held_mb": 1024.0, "train_peak_mb": 2048.0,
            "eval_peak_mb": 1024.0, "memory_budget_gib": 4.0, "loss_rel_err": 1e-3, "logits_rel_err": 1e-3,
            "tolerance": 0.01, "finite": True}
    return {**base, **kw}


def test_verdict_rules():
    assert verdict(_row()) == {"verdict": "ok", "problems": [], "fixes": []}
    # 9 GiB usable of 10; 1 GiB weights + 10 GiB training peak: MEMORY_BUDGET loses the 2 GiB excess, batch ≈ 32·8/10
    v = verdict(_row(train_peak_mb=10 * 1024.0, memory_budget_gib=8.0))
    assert v["verdict"] == "FAIL"
    assert "set TRAINER.LOREAL.MEMORY_BUDGET ≤ 6" in v["fixes"]
    assert "lower DATALOADER.TRAIN_X.BATCH_SIZE to ≈25" in v["fixes"]
    # evaluation above the budget (the text passes without a graph unbounded): a smaller test batch
    v = verdict(_row(eval_peak_mb=8 * 1024.0))
    assert any("evaluation peak" in p for p in v["problems"]) and "lower DATALOADER.TEST.BATCH_SIZE to ≈50" in v["fixes"]
    # a budget the device cannot hold at all
    v = verdict(_row(memory_budget_gib=40.0))
    assert v["fixes"] == ["set TRAINER.LOREAL.MEMORY_BUDGET ≤ 8"]
    # precision: fp16 too far from fp32 -> amp; amp too far -> fp32; not finite -> the same
    assert verdict(_row(loss_rel_err=0.3))["fixes"] == ["use PREC amp"]
    assert verdict(_row(precision="amp", requested_precision="amp", logits_rel_err=0.3))["fixes"] == ["use PREC fp32"]
    assert verdict(_row(finite=False))["fixes"] == ["use PREC amp"]
    # weights alone beyond the device: no batch size helps
    v = verdict(_row(held_mb=9.5 * 1024))
    assert v["fixes"] == ["use a device with over 10.56 GiB"]
    # a baseline row has no budget to judge
    assert verdict(_row(trainer="CoOp", memory_budget_gib=None, eval_peak_mb=8 * 1024.0))["verdict"] == "ok"


def test_errors_are_against_the_same_step_in_fp32(clip_file, monkeypatch):
    """MMA's amp under bf16 autocast on the CPU (the stand-in for CUDA amp) against a plain fp32 run."""
    monkeypatch.setenv("LOREAL_CPU_AUTOCAST", "bf16")
    setup = read_setup("MMA", "vit_b16_ep5")
    assert setup.precision == "amp"
    options = Options(classes=3, train_batch=2, test_batch=2, size=32)
    row = check_trainer(setup, Backbones(clip_file, torch.device("cpu")), options)
    assert row["error"] is None and row["precision_ran"] == "amp (bf16 autocast)"
    assert row["tolerance"] == pytest.approx(20 * 2**-8)  # 20 units of bf16 roundoff

    # The reference, written plainly: the documented seeds and order of the inputs, the learner seeded with 0.
    clip = load_clip(clip_file)
    from loreal.clip import PromptableCLIP

    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=g)
    labels = torch.randint(0, 3, (2,), generator=g)
    torch.manual_seed(0)
    learner = create_learner("MMA", PromptableCLIP(clip), classnames(3), setup.learner_config)
    model = PromptModel(PromptableCLIP(clip), learner).train()
    loss32 = learner.loss(model(images), labels, images)[0].detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16 = learner.loss(model(images), labels, images)[0].detach()
    assert row["loss_fp32"] == pytest.approx(float(loss32), rel=1e-5)
    assert row["loss"] == pytest.approx(float(loss_bf16), rel=1e-5)
    expected = abs(float(loss_bf16) - float(loss32)) / abs(float(loss32))
    assert row["loss_rel_err"] == pytest.approx(expected, rel=1e-3, abs=1e-7)
    assert row["loss_rel_err"] > 0 and row["logits_rel_err"] > 0  # bf16 really ran


def test_loreal_rows_run_two_distinct_students(clip_file):
    setup = read_setup("CoOp_LOREAL", "vit_b16_ep50")
    clip = Backbones(clip_file, torch.device("cpu")).get(setup, fp16=False)
    model = build_model(setup, clip, classnames(3), seed=0)
    assert isinstance(model, LorealModel) and model.alpha is not model.beta
    a, b = model.alpha.trainable_state_dict(), model.beta.trainable_state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(not p.requires_grad for p in [*model.alpha.parameters(), *model.beta.parameters()])


def test_configs_are_the_shipped_yamls():
    trainers = trainers_of()
    assert trainers == [t for b in list_baselines() for t in (b, f"{b}_LOREAL")]
    assert default_config("CoOp") == default_config("CoOp_LOREAL") == "vit_b16_ep50_ctxv1"  # its paper config
    assert "test_tiny" not in shipped_configs("CoOp")
    chosen = choose_configs(trainers_of(["MMA"]), ["MMA_LOREAL=vit_b16_ep5_imnet"])
    assert chosen == {"MMA": "vit_b16_ep5", "MMA_LOREAL": "vit_b16_ep5_imnet"}
    setup = read_setup("MMA_LOREAL", "vit_b16_ep5_imnet")
    with open(setup.config) as f:
        raw = yaml.safe_load(f)
    assert setup.precision == raw["TRAINER"]["MMADAPTER"]["PREC"]
    assert setup.train_batch == raw["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"]
    assert setup.test_batch == raw["DATALOADER"]["TEST"]["BATCH_SIZE"]
    assert setup.loreal_config.memory_budget == raw["TRAINER"]["LOREAL"]["MEMORY_BUDGET"]
    assert read_setup("MMA_LOREAL", "vit_b16_ep5_imnet", ["INPUT.SIZE", "(96, 96)"]).size == 96


def test_the_doctor_does_not_import_dassl():
    code = ("import sys; import loreal.doctor.cli, loreal.doctor.checks; "
            "sys.exit(any(m == 'dassl' or m.startswith('dassl.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""``loreal reproduce`` without Dassl: the grid (count, shared α, order, presets), bad input, the manifest, and
both executors (local slots, submitit's debug executor) on a fake ``python`` standing in for train.py."""
import json
import os
import shlex
import sys
import textwrap
from io import StringIO

import pytest
from pipeline_env import write_fake_python

from loreal.cli import main as cli_main
from loreal.data.catalog import BASE_TO_NOVEL
from loreal.errors import ConfigError
from loreal.pipeline import CE_TARGETS, DG_TARGETS, MARKER, run_state
from loreal.reproduce import execute as execute_mod, manifest
from loreal.reproduce.execute import LocalBackend, execute, gpu_slots
from loreal.reproduce.grid import Grid, expand, is_alpha
from loreal.reproduce.presets import PRESETS

# The full paper grid: 4 baselines x 3 seeds x
#   B2N, per dataset: α once (224, shared by every φ) + per φ: β, β new, LOREAL, LOREAL new, α at φ base/new = 1 + 6·3
#   ImageNet transfer: α, then per φ: β, LOREAL, α/β/LOREAL on the 10 CE targets and 4 DG variants, α on ImageNet
PAPER_RUNS = 4 * 3 * (11 * (1 + 6 * 3) + 1 + 3 * (2 + 3 * 14 + 1))
assert PAPER_RUNS == 4140  # the count stated in the README


def test_full_paper_grid_count_and_no_duplicate_alpha():
    stages = expand(Grid(root="/data", output="/out"))
    assert len(stages) == PAPER_RUNS
    assert len({s.output_dir for s in stages}) == len(stages)
    alphas = [s for s in stages if is_alpha(s)]
    assert len(alphas) == 4 * 3 * (len(BASE_TO_NOVEL) + 1)  # per baseline and seed: 11 B2N datasets + ImageNet
    assert all("/lr" not in a.output_dir for a in alphas)
    # every run at φ has φ in its path; every need comes first
    seen = set()
    for s in stages:
        assert set(s.needs) <= seen, s.output_dir
        seen.add(s.output_dir)
        assert is_alpha(s) or any(f"/lr{p}/" in s.output_dir for p in (96, 144, 192))
    assert sum(s.name.startswith("alpha@") for s in stages) == 4 * 3 * 3 * (1 + len(CE_TARGETS) + len(DG_TARGETS))


def test_dry_run_prints_every_command_and_the_count(tmp_path, capsys):
    assert cli_main(["reproduce", "--root", str(tmp_path / "d"), "--output", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"# {PAPER_RUNS} runs (144 of them α")
    commands = lines[:-1]
    assert len(commands) == PAPER_RUNS == len(set(commands))
    assert all(shlex.split(c)[1:3] == ["-m", "loreal.trainers.train"] for c in commands)
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_preset_variants_get_their_own_folders_and_opts_only_for_loreal():
    plain = expand(Grid(baselines=("CoOp",), benchmarks=("lr-base2new",), datasets=("dtd",), sizes=(96,), seeds=(1,)))
    stages = expand(Grid(baselines=("CoOp",), benchmarks=("lr-base2new",), datasets=("dtd",), sizes=(96,),
                         seeds=(1,), presets=("table6",)))
    extra = [s for s in stages if s not in plain]
    assert set(plain) <= set(stages) and len(extra) == 2 * len(PRESETS["table6"].variants)
    for s in extra:
        args = list(s.args)
        assert "CoOp_LOREAL/vit_b16_ep50_ctxv1@table6-" in s.output_dir and args[args.index("--trainer") + 1] == "CoOp_LOREAL"
        assert args[args.index("--output-dir") + 1] == s.output_dir
    no_lld = {s.name: s for s in extra if "without_LLD" in s.output_dir}
    assert list(no_lld["loreal_new[table6-without_LLD]"].args[-2:]) == ["TRAINER.LOREAL.USE_LLD", "False"]
    model_dir = list(no_lld["loreal_new[table6-without_LLD]"].args)
    assert model_dir[model_dir.index("--model-dir") + 1] == no_lld["loreal[table6-without_LLD]"].output_dir
    # α and β stay the full runs' (shared); the variant's needs point at them and at its own LOREAL run
    beta = next(s for s in plain if s.name == "beta")
    assert beta.output_dir in no_lld["loreal[table6-without_LLD]"].needs
    assert all("TRAINER.LOREAL.USE_LLD" not in s.args for s in plain)


@pytest.mark.parametrize("argv, message", [
    (["--benchmarks", "lr-b2n"], "unknown benchmark 'lr-b2n': --benchmarks takes lr-base2new, lr-xd, lr-dg"),
    (["--baselines", "ProGrad"], "unknown baseline 'ProGrad': --baselines takes CoOp, MaPLe, MMA, MMRL, CoCoOp, KgCoOp, PromptSRC"),
    (["--datasets", "pets"], "unknown dataset 'pets': --datasets takes imagenet, caltech101"),
    (["--benchmarks", "lr-dg", "--dg-targets", "imagenet_c"], "unknown domain-generalisation target 'imagenet_c'"),
    (["--preset", "table7"], "unknown preset 'table7': --preset takes table6, dim, temp, m, lambda, diagnostics"),
    (["--sizes", "96", "96"], "give distinct positive φ values"),
    (["--gpus", "7"], "GPU id 7 does not exist (this machine has"),
    (["--gpus", "a,b"], "--gpus 'a,b': give whole numbers"),
])
def test_bad_input_names_the_fix(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.setattr(execute_mod, "visible_gpus", lambda: ["0", "1"])
    assert cli_main(["reproduce", "--root", str(tmp_path), "--output", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_gpu_ids_are_checked_and_slots_get_their_device(monkeypatch):
    monkeypatch.setattr(execute_mod, "visible_gpus", lambda: ["2", "3"])  # CUDA_VISIBLE_DEVICES=2,3
    assert gpu_slots([0, 1]) == [{"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "3"}]
    with pytest.raises(ConfigError, match=r"GPU id 2 does not exist \(this machine has 2: 0, 1\)"):
        gpu_slots([0, 2])
    monkeypatch.setattr(execute_mod, "visible_gpus", lambda: [])
    with pytest.raises(ConfigError, match="has none.*leave --gpus out to run on the CPU"):
        gpu_slots([0])
    assert gpu_slots(None, jobs=2) == [{"CUDA_VISIBLE_DEVICES": ""}] * 2


# --------------------------------------------------------------------------- executing on a fake train.py
FAKE = """\
#!{python}
# Stands in for `python -m loreal.trainers.train ...`: logs an accuracy, records its device and time, and writes
# the completion marker last. FAKE_FAIL=<substring of an output dir> makes that run fail.
import json, os, sys, time, zlib
args = sys.argv[3:]
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
start = time.time()
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in out:
    print("Traceback (most recent call last):\\nRuntimeError: CUDA out of memory (fake)")
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
acc = 40 + zlib.crc32(out.encode()) % 50
with open(os.path.join(out, "log.txt"), "w") as f:
    f.write("Finish training\\n=> result\\n* accuracy: %.1f%%\\n" % acc)
with open(os.path.join(out, "device.json"), "w") as f:
    json.dump({{"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time(),
               "argv": sys.argv}}, f)
from loreal.pipeline.stage import mark_done
mark_done(out, {{"fake": True}})
"""


@pytest.fixture
def fake_python(tmp_path):
    return write_fake_python(tmp_path / "fake_python", FAKE)


def small_grid(tmp_path, **kw):
    kw = {"sizes": (96, 144), "seeds": (1,), **kw}
    return Grid(root=str(tmp_path / "data"), output=str(tmp_path / "out"), baselines=("CoOp",), datasets=("dtd",),
                xd_targets=("caltech101",), dg_targets=("imagenet_a",), config="test_tiny", **kw)


def test_local_executor_runs_reports_failures_with_log_tail_and_resumes(tmp_path, fake_python, monkeypatch):
    stages = expand(small_grid(tmp_path))
    monkeypatch.setenv("FAKE_FAIL", "lr144/base2new/train_base/dtd/shots_16/CoOp/test_tiny/seed1")
    stream = StringIO()
    report = execute(stages, LocalBackend(gpu_slots(None, jobs=2), python=fake_python), poll_seconds=0.01,
                     stream=stream)
    assert not report.ok and [r.stage.name for r in report.failed] == ["beta"]
    assert "CUDA out of memory (fake)" in report.failed[0].tail and "CUDA out of memory (fake)" in report.summary()
    blocked = {s.name for s, _ in report.blocked}
    assert blocked == {"beta_new", "loreal", "loreal_new"}  # dependents not run, and said so
    assert all(run_state(s.output_dir) == "absent" for s, _ in report.blocked)
    assert len(report.done) == len(stages) - 4 and not report.before
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"[reproduce] done 0/{len(stages)} · running 0 · failed 0 · left {len(stages)}"
    assert any("s per run · about" in line and "to finish" in line for line in lines)
    assert lines[-1].startswith(f"[reproduce] done {len(stages) - 4}/{len(stages)} · running 0 · failed 1 · not run 3 · left 0")

    monkeypatch.delenv("FAKE_FAIL")
    again = execute(stages, LocalBackend(gpu_slots(None), python=fake_python), poll_seconds=0.01, stream=StringIO())
    assert again.ok and len(again.before) == len(stages) - 4 and len(again.done) == 4
    failed_dir = report.failed[0].stage.output_dir
    assert sorted(os.listdir(failed_dir))[:2] == ["device.json", "log.txt"]  # the failed attempt's log is kept:
    assert {"stdout.txt", "stdout.2.txt"} <= set(os.listdir(failed_dir))
    third = execute(stages, LocalBackend(gpu_slots(None), python=fake_python), poll_seconds=0.01, stream=StringIO())
    assert third.ok and len(third.before) == len(stages) and not third.done


def test_one_run_per_gpu_at_a_time(tmp_path, fake_python, monkeypatch):
    monkeypatch.setattr(execute_mod, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setenv("FAKE_SLEEP", "0.05")
    stages = expand(small_grid(tmp_path, benchmarks=("lr-base2new",)))
    report = execute(stages, LocalBackend(gpu_slots([0, 1]), python=fake_python), poll_seconds=0.01,
                     stream=StringIO())
    assert report.ok
    runs = [json.load(open(os.path.join(s.output_dir, "device.json"))) for s in stages]
    assert {r["gpu"] for r in runs} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in runs if r["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_slurm_path_submits_the_local_commands_through_submitit(tmp_path, fake_python):
    pytest.importorskip("submitit")
    from loreal.reproduce.slurm import SubmititBackend

    stages = expand(small_grid(tmp_path))
    backend = SubmititBackend(tmp_path / "slurm_logs", cluster="debug", max_jobs=4, python=fake_python,
                              partition="gpu")
    report = execute(stages, backend, poll_seconds=0.0, stream=StringIO())
    assert report.ok and len(report.done) == len(stages)
    assert sorted(backend.submitted) == sorted(s.command(fake_python) for s in stages)
    # the same commands the local executor runs and --dry-run prints (order may differ: readiness decides)
    assert all(os.path.isfile(os.path.join(s.output_dir, MARKER)) for s in stages)
    # each job's id recorded beside its outputs, for a later driver to ask whether it still runs
    recorded = [json.load(open(os.path.join(s.output_dir, "loreal_job.json"))) for s in stages]
    assert all(r["cluster"] == "debug" and r["job_id"].startswith("DEBUG_") for r in recorded)


def test_cli_runs_the_grid_writes_the_manifest_and_refuses_another_grid(tmp_path, fake_python, capsys):
    common = ["reproduce", "--root", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--python",
              fake_python, "--baselines", "CoOp", "--sizes", "96", "--seeds", "1", "--datasets", "dtd",
              "--benchmarks", "lr-base2new", "lr-xd", "--xd-targets", "caltech101", "--config", "test_tiny"]
    assert cli_main(common) == 0
    captured = capsys.readouterr()
    assert "0 failed, 0 not run" in captured.out and "loreal results" in captured.out
    recorded = manifest.read(tmp_path / "out")
    assert recorded["grids"][0]["sizes"] == [96] and recorded["identity"]["config"] == "test_tiny"
    # a bigger grid with the same identity shares the folder (α and the finished runs are reused)
    assert cli_main(common + ["--sizes", "96", "144"]) == 0
    # per φ 6 B2N + 6 transfer runs (β, LOREAL, both on caltech101, α on ImageNet and caltech101); 2 α for all φ
    assert "26 runs: 14 done before (skipped), 12 run now, 0 failed" in capsys.readouterr().out
    assert [g["sizes"] for g in manifest.read(tmp_path / "out")["grids"]] == [[96], [96, 144]]
    # a grid with other opts (not visible in run paths) is refused, naming the fixes
    assert cli_main(common + ["--opts", "OPTIM.MAX_EPOCH", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds the runs of a different grid (opts: there [], now ['OPTIM.MAX_EPOCH', '2'])" in err
    assert "--output DIR" in err and "--force-grid" in err
    assert cli_main(common + ["--opts", "OPTIM.MAX_EPOCH", "2", "--force-grid", "--dry-run"]) == 0
    # the results read the manifest: the grid's tables are complete
    assert cli_main(["results", str(tmp_path / "out"), "--no-csv"]) == 0
    tables = capsys.readouterr().out
    assert "## LR base-to-novel, φ = 96" in tables and "## LR cross-dataset" in tables
    body = tables.split("## Summary")[0]
    assert "—" not in body


def test_slurm_command_line_runs_what_the_dry_run_prints(tmp_path, fake_python, capsys):
    pytest.importorskip("submitit")
    common = ["reproduce", "--root", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "--python",
              fake_python, "--baselines", "MMRL", "--sizes", "96", "--seeds", "3", "--benchmarks", "lr-dg",
              "--dg-targets", "imagenet_r", "--config", "test_tiny"]
    assert cli_main(common + ["--dry-run"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert cli_main(common + ["--executor", "slurm", "--submitit-cluster", "debug", "--partition", "gpu",
                              "--poll", "0"]) == 0
    assert "0 failed" in capsys.readouterr().out
    ran = [json.load(open(os.path.join(d, "device.json")))["argv"]
           for d, _, files in os.walk(tmp_path / "out") if "device.json" in files]
    assert sorted(shlex.join(a) for a in ran) == sorted(printed) and len(printed) == 7
    assert (tmp_path / "out" / "slurm_logs").is_dir()

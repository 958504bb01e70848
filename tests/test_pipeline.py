"""The pipeline unit without Dassl: stage lists (paths, φ, dependencies, shared α) and the runner
(skip finished, re-run interrupted, stop at a failure) on a fake ``python`` standing in for train.py."""
import json
import os
import sys
import textwrap

import pytest
from pipeline_env import write_fake_python

from loreal.errors import ConfigError, MissingFileError
from loreal.pipeline import (CE_TARGETS, DG_TARGETS, MARKER, PIPELINES, Stage, lr_base2new, lr_dg, lr_xd,
                             mark_done, run_pipeline, run_stage, run_state)
from loreal.pipeline.configs import trainer_config


def opt(stage: Stage, key: str) -> str:
    """Value of the last ``key`` in a stage's arguments (later opts win in yacs)."""
    args = list(stage.args)
    return args[len(args) - 1 - args[::-1].index(key) + 1]


def by_name(stages):
    return {s.name: s for s in stages}


# --------------------------------------------------------------------------- builders
def test_lr_base2new_paths_trainers_and_sizes():
    stages = lr_base2new("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "vit_b16_c2_ep5_batch4_2ctx", "oxford_pets", 2, 96,
                         root="data", output="out", shots=8, opts=["OPTIM.MAX_EPOCH", "1"])
    s = by_name(stages)
    assert list(s) == ["alpha", "beta", "beta_new", "loreal", "loreal_new", "alpha_base", "alpha_new"]
    tail = os.path.join("oxford_pets", "shots_8")
    assert s["alpha"].output_dir == os.path.join("out/base2new/train_base", tail, "MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2")
    assert s["beta"].output_dir == os.path.join("out/lr96/base2new/train_base", tail,
                                                "MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2")
    assert s["loreal_new"].output_dir == os.path.join("out/lr96/base2new/test_new", tail,
                                                      "MaPLe_LOREAL/vit_b16_c2_ep5_batch4_2ctx/seed2")
    assert s["alpha_new"].output_dir.startswith(os.path.join("out", "lr96", "base2new", "test_alpha_new"))
    # φ in every path but α's own (the ordinary 224 run); α trained at 224, everything else at φ.
    for stage in stages:
        assert ("lr96" in stage.output_dir) == (stage.name != "alpha")
        assert opt(stage, "INPUT.SIZE") == ("(224, 224)" if stage.name == "alpha" else "(96, 96)")
        assert opt(stage, "--output-dir") == stage.output_dir
        assert opt(stage, "OPTIM.MAX_EPOCH") == "1" and opt(stage, "DATASET.NUM_SHOTS") == "8"
        assert opt(stage, "--seed") == "2" and opt(stage, "TASK") == "B2N"
        trainer = opt(stage, "--trainer")
        assert trainer == ("MaPLe_LOREAL" if stage.name.startswith("loreal") else "LOREAL_MaPLe")
        assert opt(stage, "--config-file") == trainer_config(trainer.replace("LOREAL_", ""), "vit_b16_c2_ep5_batch4_2ctx")
        assert os.path.isfile(opt(stage, "--config-file")) and os.path.isfile(opt(stage, "--dataset-config-file"))
        evaluated = "--eval-only" in stage.args
        assert evaluated == (stage.name not in ("alpha", "beta", "loreal"))
        assert opt(stage, "DATASET.SUBSAMPLE_CLASSES") == ("new" if stage.name.endswith("new") else "base")
    assert opt(s["loreal"], "TRAINER.LOREAL.ALPHA_CHECKPOINT") == s["alpha"].output_dir
    assert opt(s["loreal_new"], "TRAINER.LOREAL.BETA_CHECKPOINT") == s["beta"].output_dir
    assert opt(s["loreal_new"], "--model-dir") == s["loreal"].output_dir
    assert opt(s["alpha_base"], "--model-dir") == s["alpha"].output_dir
    # Dependencies point at earlier stages only.
    seen = set()
    for stage in stages:
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.output_dir)
    assert set(s["loreal"].needs) == {s["alpha"].output_dir, s["beta"].output_dir}


def test_lr_base2new_reuses_a_given_alpha_without_a_stage():
    stages = lr_base2new("CoOp", "test_tiny", "test_tiny", "oxford_pets", 1, 144, root="d", alpha="host/out/alpha")
    s = by_name(stages)
    assert "alpha" not in s
    assert opt(s["loreal"], "TRAINER.LOREAL.ALPHA_CHECKPOINT") == "host/out/alpha"
    assert opt(s["alpha_new"], "--model-dir") == "host/out/alpha"
    assert all("host/out/alpha" not in st.needs for st in stages)


def test_xd_and_dg_share_alpha_beta_loreal_and_evaluate_every_target():
    kw = dict(root="data", output="out", shots=16)
    xd = lr_xd("MMRL", "test_tiny", "test_tiny", 1, 192, **kw)
    dg = lr_dg("MMRL", "test_tiny", "test_tiny", 1, 192, **kw)
    assert xd[:3] == dg[:3] and [s.name for s in xd[:3]] == ["alpha", "beta", "loreal"]
    assert xd[0].output_dir == os.path.join("out/xd/train/imagenet/shots_16/MMRL/test_tiny/seed1")
    assert xd[2].output_dir == os.path.join("out/lr192/xd/train/imagenet/shots_16/MMRL_LOREAL/test_tiny/seed1")
    for targets, stages in ((CE_TARGETS, xd), (DG_TARGETS, dg)):
        s = by_name(stages)
        for t in targets:
            assert s[f"loreal@{t}"].output_dir == os.path.join(f"out/lr192/xd/test/{t}/shots_16/MMRL_LOREAL/test_tiny/seed1")
            assert opt(s[f"beta@{t}"], "--model-dir") == s["beta"].output_dir
            assert s[f"alpha@{t}"].output_dir == os.path.join(f"out/lr192/xd/test_alpha/{t}/shots_16/MMRL/test_tiny/seed1")
            assert opt(s[f"loreal@{t}"], "--dataset-config-file").endswith(f"{t}.yaml")
        assert "alpha@imagenet" in s  # the source column of the "trained at 224" row
        assert len(stages) == 3 + 3 * len(targets) + 1
        for stage in stages:
            assert ("lr192" in stage.output_dir) == (stage.name != "alpha")
            assert opt(stage, "TASK") == "CD" and opt(stage, "TRAINER.MMRL.REP_DIM") == "512"
            assert "DATASET.SUBSAMPLE_CLASSES" not in stage.args
    # Every stage identity is unique within a pipeline; the union of both dedupes to shared α/β/LOREAL.
    union = {s.output_dir for s in xd + dg}
    assert len(union) == len(xd) + len(dg) - 4  # alpha, beta, loreal, alpha@imagenet


def test_pipelines_table_and_bad_input(tmp_path):
    assert set(PIPELINES) == {"lr-base2new", "lr-xd", "lr-dg"}
    with pytest.raises(ConfigError, match="unknown baseline 'CLIP'.*CoOp, MaPLe, MMA, MMRL, CoCoOp, KgCoOp, PromptSRC"):
        lr_base2new("CLIP", "x", "x", "oxford_pets", 1, 96, root="d")
    with pytest.raises(MissingFileError, match=r"no config trainers/CoOp_LOREAL/nope\.yaml.*shipped: .*test_tiny"):
        lr_base2new("CoOp", "test_tiny", "nope", "oxford_pets", 1, 96, root="d")
    with pytest.raises(MissingFileError, match="no config datasets/mnist.yaml"):
        lr_base2new("CoOp", "test_tiny", "test_tiny", "mnist", 1, 96, root="d")
    own = tmp_path / "my_coop.yaml"
    own.write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    s = by_name(lr_base2new("CoOp", str(own), "test_tiny", "oxford_pets", 1, 96, root="d"))
    assert opt(s["beta"], "--config-file") == str(own) and s["beta"].output_dir.endswith(os.path.join("my_coop", "seed1"))


# --------------------------------------------------------------------------- stage state
def test_run_state_and_atomic_marker(tmp_path):
    out = tmp_path / "run"
    assert run_state(str(out)) == "absent"
    out.mkdir()
    (out / "loreal_run.lock").write_text("{}")  # a lock or a job record alone: nothing ran there yet
    (out / "loreal_job.json").write_text("{}")
    assert run_state(str(out)) == "absent"
    (out / "log.txt").write_text("epoch 1")
    assert run_state(str(out)) == "interrupted"
    for name in ("loreal_run.lock", "loreal_job.json", "log.txt"):
        os.remove(out / name)
    path = mark_done(str(out), {"trainer": "LOREAL_CoOp"})
    assert run_state(str(out)) == "done" and os.path.basename(path) == MARKER
    record = json.loads((out / MARKER).read_text())
    assert record["trainer"] == "LOREAL_CoOp" and "finished" in record
    assert sorted(os.listdir(out)) == [MARKER]  # no temporary file left behind


# --------------------------------------------------------------------------- runner on a fake python
FAKE_TRAIN = textwrap.dedent("""\
    #!{python}
    # Stands in for `python -m loreal.trainers.train ...`; FAKE_MODE says how this run ends.
    import os, signal, sys
    from loreal.pipeline.stage import mark_done
    args = sys.argv[3:]
    out = args[args.index("--output-dir") + 1]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(os.path.dirname(out), "calls.txt"), "a") as f:
        f.write(os.path.basename(out) + " " + ("resumed" if os.path.exists(os.path.join(out, "epoch1")) else "fresh") + "\\n")
    print("training", out)
    mode = os.environ.get("FAKE_MODE", "ok")
    open(os.path.join(out, "epoch1"), "w").close()
    with open(os.path.join(out, "log.txt"), "w") as f:
        f.write("accuracy: 1%")
    if mode == "fail":
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "no-marker":
        sys.exit(0)
    mark_done(out, {{"argv": args}})
""")


@pytest.fixture
def fake_python(tmp_path):
    return write_fake_python(tmp_path / "fake_python", FAKE_TRAIN)


def two_stages(tmp_path):
    a, b = str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b")
    return [Stage("a", a, ("--output-dir", a)), Stage("b", b, ("--output-dir", b), needs=(a,))]


def calls(tmp_path):
    path = tmp_path / "runs" / "calls.txt"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_runner_runs_then_skips_finished_stages(tmp_path, fake_python, capsys):
    stages = two_stages(tmp_path)
    results = run_pipeline(stages, python=fake_python)
    assert [r.status for r in results] == ["done", "done"]
    assert calls(tmp_path) == ["a fresh", "b fresh"]
    log = open(results[0].log_path).read()
    assert log.startswith("$ ") and "loreal.trainers.train" in log and "training" in log
    again = run_pipeline(stages, python=fake_python)
    assert [r.status for r in again] == ["skipped", "skipped"] and len(calls(tmp_path)) == 2
    assert "done before, skipped" in capsys.readouterr().out


def test_runner_reruns_a_killed_stage_and_keeps_its_log(tmp_path, fake_python, monkeypatch):
    stages = two_stages(tmp_path)
    monkeypatch.setenv("FAKE_MODE", "die")
    first = run_pipeline(stages, python=fake_python)
    assert [r.status for r in first] == ["failed"] and first[0].returncode == -9
    assert run_state(stages[0].output_dir) == "interrupted"
    monkeypatch.setenv("FAKE_MODE", "ok")
    lines = []
    second = run_pipeline(stages, python=fake_python, log=lines.append, quiet=True)
    assert [r.status for r in second] == ["done", "done"]
    assert calls(tmp_path) == ["a fresh", "a resumed", "b fresh"]  # re-run into the same folder, not skipped
    assert any("interrupted run" in line for line in lines)
    logs = sorted(f for f in os.listdir(stages[0].output_dir) if f.startswith(("stdout", "log")))
    assert logs == ["log.interrupted.txt", "log.txt", "stdout.2.txt", "stdout.txt"]  # the killed attempt's logs kept


def test_runner_stops_at_a_failure_with_its_log_tail(tmp_path, fake_python, monkeypatch):
    stages = two_stages(tmp_path)
    monkeypatch.setenv("FAKE_MODE", "fail")
    lines = []
    results = run_pipeline(stages, python=fake_python, log=lines.append, quiet=True)
    assert [(r.status, r.returncode) for r in results] == [("failed", 3)]
    assert "something broke" in results[0].tail and "something broke" in lines[-1]
    assert calls(tmp_path) == ["a fresh"]  # b never started


def test_runner_refuses_a_zero_exit_without_marker_and_blocks_dependents(tmp_path, fake_python, monkeypatch):
    stages = two_stages(tmp_path)
    monkeypatch.setenv("FAKE_MODE", "no-marker")
    assert run_stage(stages[0], python=fake_python, log=lambda _: None, quiet=True).status == "failed"
    blocked = run_stage(stages[1], python=fake_python, log=lambda _: None)
    assert blocked.status == "blocked" and stages[0].output_dir in blocked.tail
    assert calls(tmp_path) == ["a fresh"]


def test_dry_run_prints_commands_and_touches_nothing(tmp_path, fake_python):
    lines = []
    results = run_pipeline(two_stages(tmp_path), python=fake_python, dry_run=True, log=lines.append)
    assert [r.status for r in results] == ["dry-run", "dry-run"]
    assert lines[0].startswith(fake_python + " -m loreal.trainers.train --output-dir")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- --alpha checks, CLI input
def save_run(folder, module: str, meta: dict | None, epoch: int = 2):
    import torch

    path = folder / module / f"model.pth.tar-{epoch}"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"ctx": torch.zeros(4, 8)}, "epoch": epoch, **({"meta": meta} if meta else {})}, path)
    return path


def test_check_alpha_refuses_another_baseline_size_or_a_loreal_run(tmp_path):
    from loreal.errors import CheckpointError
    from loreal.pipeline.alpha import check_alpha

    save_run(tmp_path / "maple", "MultiModalPromptLearner", None)
    with pytest.raises(CheckpointError, match=r"--alpha .*maple is a MaPLe checkpoint, but this run trains CoOp: "
                                              r"point it at a CoOp run"):
        check_alpha(str(tmp_path / "maple"), "CoOp")
    save_run(tmp_path / "beta", "prompt_learner", {"baseline": "CoOp", "image_size": 96})
    with pytest.raises(CheckpointError, match=r"trained at 96x96, but student alpha is the 224 run .* pass the CoOp "
                                              r"run trained at 224, or leave --alpha out"):
        check_alpha(str(tmp_path / "beta"), "CoOp")
    save_run(tmp_path / "mma_meta", "prompt_learner", {"baseline": "MMA", "image_size": 224})
    with pytest.raises(CheckpointError, match="is a MMA checkpoint, but this run trains CoOp"):
        check_alpha(str(tmp_path / "mma_meta"), "CoOp")
    save_run(tmp_path / "lor", "LOREAL", {"baseline": "CoOp", "loreal": {}})
    with pytest.raises(CheckpointError, match="points at a LOREAL run"):
        check_alpha(str(tmp_path / "lor"), "CoOp")
    with pytest.raises(MissingFileError, match="no checkpoint at"):
        check_alpha(str(tmp_path / "nothing"), "CoOp")
    ours = save_run(tmp_path / "ours", "prompt_learner", {"baseline": "CoOp", "image_size": 224})
    assert check_alpha(str(tmp_path / "ours"), "CoOp") == f"{ours}: a CoOp checkpoint trained at 224"
    upstream = save_run(tmp_path / "upstream", "prompt_learner", None, epoch=50)
    said = check_alpha(str(tmp_path / "upstream"), "CoOp")
    assert said.startswith(f"{upstream}: an upstream CoOp checkpoint (no metadata") and "train at 224 only" in said


def cli(*args, cwd=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "loreal.cli", "pipeline", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_dry_run_from_an_unrelated_folder_and_bad_input(tmp_path):
    proc = cli("lr-xd", "--dry-run", "--root", "/data", "--targets", "dtd,eurosat", "MMA", "vit_b16_ep5",
               "vit_b16_ep5", "3", "144", "OPTIM.MAX_EPOCH", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 + 3 * 2 + 1
    assert all(" -m loreal.trainers.train --root /data --seed 3 " in line for line in lines)
    assert all(line.endswith("OPTIM.MAX_EPOCH 1") for line in lines)
    assert not any((tmp_path / d).exists() for d in ("output", "configs"))  # nothing written, nothing needed here
    late = cli("lr-base2new", "CoOp", "test_tiny", "test_tiny", "oxford_pets", "1", "96", "--dry-run", cwd=tmp_path)
    assert late.returncode == 2 and "--dry-run came after the positional arguments" in late.stderr
    odd = cli("lr-base2new", "CoOp", "test_tiny", "test_tiny", "oxford_pets", "1", "96", "OPTIM.MAX_EPOCH", cwd=tmp_path)
    assert odd.returncode == 2 and "KEY VALUE pairs" in odd.stderr
    nocfg = cli("lr-dg", "--dry-run", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "vit_b16", "1", "96", cwd=tmp_path)
    assert nocfg.returncode == 2 and "no config trainers/MaPLe_LOREAL/vit_b16.yaml" in nocfg.stderr
    save_run(tmp_path / "maple", "MultiModalPromptLearner", None)
    alpha = cli("lr-base2new", "--alpha", str(tmp_path / "maple"), "CoOp", "test_tiny", "test_tiny", "oxford_pets",
                "1", "96", cwd=tmp_path)
    assert alpha.returncode == 2 and "is a MaPLe checkpoint, but this run trains CoOp" in alpha.stderr


# --------------------------------------------------------------------------- the shell scripts
needs_bash = pytest.mark.skipif(__import__("shutil").which("bash") is None, reason="the run scripts need bash")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args, cwd=REPO, **env):
    import subprocess

    environ = {**os.environ, "PYTHON": "echo", **env}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", name), *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


@needs_bash
def test_baseline_scripts_rerun_interrupted_folders_and_put_phi_in_the_path(tmp_path):
    out = tmp_path / "output"
    run = out / "imagenet/CoOp/vit_b16_ep50_16shots/seed1"
    run.mkdir(parents=True)
    again = script("xd_train.sh", "CoOp", "vit_b16_ep50", "imagenet", "1", OUTPUT=str(out))
    assert again.returncode == 0 and "interrupted run" in again.stdout and "train.py" in again.stdout
    mark_done(str(run), {})
    assert "skip this job" in script("xd_train.sh", "CoOp", "vit_b16_ep50", "imagenet", "1", OUTPUT=str(out)).stdout
    lr = script("xd_train.sh", "CoOp", "vit_b16_ep50", "imagenet", "1", OUTPUT=str(out), SIZE="96").stdout
    assert f"--output-dir {out}/lr96/imagenet/CoOp/vit_b16_ep50_16shots/seed1" in lr
    assert lr.rstrip().endswith("TASK CD INPUT.SIZE (96, 96)")


@needs_bash
def test_lr_scripts_wrap_the_pipeline_command_from_any_folder(tmp_path):
    bin_dir = os.path.dirname(sys.executable)  # PYTHON=echo runs `python --dry-run`: this interpreter's
    env = dict(OUTPUT="out", DATA="/data", SHOTS="4", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    b2n = script("lr_base2new.sh", "CoOp", "test_tiny", "test_tiny", "oxford_pets", "1", "96", "OPTIM.MAX_EPOCH", "1",
                 cwd=tmp_path, **env)
    assert b2n.returncode == 0, b2n.stderr
    expected = [" ".join(s.command("X")[1:]) for s in lr_base2new(
        "CoOp", "test_tiny", "test_tiny", "oxford_pets", 1, 96, root="/data", output="out", shots=4,
        opts=["OPTIM.MAX_EPOCH", "1"])]
    assert [line.split(" ", 1)[1].replace("'", "") for line in b2n.stdout.splitlines()] == expected
    dg = script("lr_dg.sh", "MMRL", "test_tiny", "test_tiny", "1", "144", cwd=tmp_path, TARGETS="imagenet_a", **env)
    assert dg.returncode == 0 and len(dg.stdout.splitlines()) == 3 + 3 + 1 and "xd/test/imagenet_a" in dg.stdout
    assert script("lr_xd.sh", "MMRL", cwd=tmp_path, **env).returncode == 2

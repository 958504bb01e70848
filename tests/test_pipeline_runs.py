"""The LR base-to-novel pipeline through real train.py runs (tiny CLIP, synthetic data, 1 epoch):
`loreal pipeline` from an unrelated folder equals the script from the repository root, also after
being killed half-way and re-run; finished stages are skipped, an interrupted one resumes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed: the pipeline runs train.py")

from loreal.pipeline import lr_base2new, run_state  # noqa: E402
from loreal.results import parse_log  # noqa: E402
from pipeline_env import SHOTS, environ, write_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARGS = ("CoOp", "test_tiny", "test_tiny", "oxford_pets", "1", "96")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_env(tmp_path_factory.mktemp("pipeline_runs"))


def stages(env, output):
    return lr_base2new(*ARGS[:4], 1, 96, root=str(env / "data"), output=str(output), shots=int(SHOTS))


def accuracies(env, output):
    return {s.name: parse_log(Path(s.output_dir) / "log.txt") for s in stages(env, output)}


def command(env, output, *extra):
    return [sys.executable, "-m", "loreal.cli", "pipeline", "lr-base2new", "--quiet", "--root", str(env / "data"),
            "--shots", SHOTS, "--output", str(output), *extra, *ARGS, "MODEL.BACKBONE.NAME", str(env / "tiny_clip.pt")]


@pytest.fixture(scope="module")
def script_run(env):
    """scripts/lr_base2new.sh from the repository root."""
    out = env / "script_output"
    proc = subprocess.run(["bash", "scripts/lr_base2new.sh", *ARGS, "MODEL.BACKBONE.NAME", str(env / "tiny_clip.pt")],
                          cwd=REPO, env=environ(env, DATA=str(env / "data"), SHOTS=SHOTS, OUTPUT=str(out),
                                                PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_command_from_anywhere_killed_and_rerun_gives_the_script_numbers(env, script_run, tmp_path):
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    out = tmp_path / "output"
    beta = Path(next(s.output_dir for s in stages(env, out) if s.name == "beta"))
    # Killed half-way: the whole pipeline (runner and train.py) as soon as stage β has started.
    proc = subprocess.Popen(command(env, out), cwd=elsewhere, env=environ(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (beta / "log.txt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_state(str(beta)) == "interrupted", "β finished before it could be killed"

    rerun = subprocess.run(command(env, out), cwd=elsewhere, env=environ(env), capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "[alpha] done before, skipped" in rerun.stdout
    assert "[beta] " in rerun.stdout and "holds an interrupted run" in rerun.stdout.split("[beta] ", 1)[1]
    assert not (elsewhere / "configs").exists() and os.listdir(elsewhere) == []
    ours, theirs = accuracies(env, out), accuracies(env, script_run)
    assert None not in ours.values() and ours == theirs  # same seed, same numbers, every stage
    assert sorted(f for f in os.listdir(beta) if f.startswith(("stdout", "log"))) == [
        "log.interrupted.txt", "log.txt", "stdout.2.txt", "stdout.txt"]  # every attempt's log kept

    # Finished: every stage skipped. A training stage whose marker is gone resumes from its checkpoint.
    os.remove(beta / "loreal_done.json")
    again = subprocess.run(command(env, out), cwd=elsewhere, env=environ(env), capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == len(ours) - 1
    resumed = (beta / "stdout.3.txt").read_text()
    assert "Found checkpoint at" in resumed and "Previous epoch: 1" in resumed
    assert parse_log(beta / "log.txt") is not None and accuracies(env, out) == theirs

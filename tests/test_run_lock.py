"""One run per stage folder: the lock (held, stale, another host's), the scheduler's answer about recorded jobs,
two drivers at once over the same folders (each run once, both finish, no live log moved), and a second
train.py on a held folder refused without touching it."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from io import StringIO
from pathlib import Path

import pytest
from pipeline_env import write_fake_python

from loreal.errors import RunLockedError
from loreal.pipeline import MARKER, Stage, mark_done, run_stage, run_state
from loreal.pipeline.lock import JOB_FILE, LOCK_FILE, JobQueue, RunLock, holder, record_job, this_host
from loreal.reproduce.execute import LocalBackend, execute, gpu_slots
from loreal.reproduce.grid import Grid, expand

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every file's content and modification time: what "touches nothing" compares."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def queue(tmp_path: Path, output: str = "", returncode: int = 0) -> JobQueue:
    """A JobQueue whose squeue is a script printing ``output`` ("JOBID STATE" lines)."""
    script = tmp_path / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {returncode}\n")
    script.chmod(0o755)
    return JobQueue(command=[str(script)], ttl=0)


# --------------------------------------------------------------------------- the lock itself
def test_a_held_folder_is_refused_naming_its_owner_and_touching_nothing(tmp_path):
    out = tmp_path / "run"
    with RunLock.acquire(str(out), command="first") as lock:
        (out / "log.txt").write_text("epoch 1\n")
        before = snapshot(out)
        with pytest.raises(RunLockedError, match=rf"is being run by pid {os.getpid()} on host {this_host()}.*"
                                                 r"another --output-dir") as refused:
            RunLock.acquire(str(out), command="second")  # another open file: refused even in this process
        assert refused.value.live is True and snapshot(out) == before
        seen = holder(str(out))
        assert seen is not None and seen.live and seen.record["pid"] == os.getpid()
        assert json.loads((out / LOCK_FILE).read_text())["command"] == "first"
    assert not (out / LOCK_FILE).exists() and holder(str(out)) is None  # released: the record is gone
    RunLock.acquire(str(out)).release()  # and the folder can be taken again


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "run"
    # A run killed while holding the lock: its record stays, the kernel dropped its flock.
    code = ("import os, signal, sys; from loreal.pipeline.lock import RunLock; "
            "RunLock.acquire(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    dead = json.loads((out / LOCK_FILE).read_text())
    assert dead["pid"] != os.getpid() and dead["host"] == this_host()
    assert holder(str(out)) is None  # a driver sees nobody there
    said = []
    with RunLock.acquire(str(out), log=said.append):
        assert said == [f"{out}: taking over the stale lock of pid {dead['pid']} on host {this_host()} since "
                        f"{dead['started']}, which no longer runs (killed or crashed)"]
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_another_hosts_lock_is_refused_with_the_way_out_unless_its_slurm_job_ended(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"host": "node17", "pid": 4242, "started": "yesterday"}))
    with pytest.raises(RunLockedError, match=rf"locked by pid 4242 on host node17 since yesterday, which this host "
                                             rf"cannot check.*delete {out / LOCK_FILE} and run again") as refused:
        RunLock.acquire(str(out))
    assert refused.value.live is None
    assert holder(str(out)).live is None
    # The record names its SLURM job: the scheduler decides.
    (out / LOCK_FILE).write_text(json.dumps({"host": "node17", "pid": 4242, "slurm_job": "77"}))
    assert holder(str(out), queue(tmp_path, "77 RUNNING\\n")).live is True
    with pytest.raises(RunLockedError, match="SLURM job 77"):
        RunLock.acquire(str(out), jobs=queue(tmp_path, "77 RUNNING\\n"))
    said = []
    RunLock.acquire(str(out), jobs=queue(tmp_path, "78 RUNNING\\n77 TIMEOUT\\n"), log=said.append).release()
    assert "taking over the stale lock of pid 4242 on host node17, SLURM job 77" in said[0]


def test_job_queue_reads_squeue_and_says_when_it_cannot(tmp_path):
    jobs = queue(tmp_path, "123 RUNNING\\n124 PENDING\\n125 COMPLETED\\n")
    assert [jobs.alive(j) for j in ("123", "124", "125", "999")] == [True, True, False, False]
    assert queue(tmp_path, "", returncode=1).alive("123") is None  # the controller did not answer
    assert JobQueue(command=[str(tmp_path / "no-squeue-here")]).alive("123") is None


def test_a_recorded_job_holds_its_folder_until_its_marker_or_its_end(tmp_path):
    out = tmp_path / "run"
    record_job(str(out), "555")
    assert run_state(str(out)) == "absent"  # a record alone: nothing ran there yet
    assert holder(str(out), queue(tmp_path, "555 PENDING\\n")).live is True
    assert holder(str(out), queue(tmp_path, "")) is None  # no longer queued
    cannot = holder(str(out), queue(tmp_path, "", returncode=1))
    assert cannot.live is None and f"delete {out / JOB_FILE}" in cannot.message()
    mark_done(str(out), {})
    assert holder(str(out), queue(tmp_path, "555 RUNNING\\n")) is None  # finished: nobody's


# --------------------------------------------------------------------------- two drivers at once
FAKE = textwrap.dedent("""\
    #!{python}
    # Stands in for train.py: records the call, writes log.txt, sleeps, checks nobody moved its log, marks done.
    # α (the run without /lr in its path) takes longest: the drivers, started together, meet there.
    import os, sys, time
    args = sys.argv[3:]
    out = args[args.index("--output-dir") + 1]
    os.makedirs(out, exist_ok=True)
    with open(os.environ["CALLS"], "a") as f:
        f.write(out + "\\n")
    log, mine = os.path.join(out, "log.txt"), "run %d\\n" % os.getpid()
    with open(log, "w") as f:
        f.write(mine)
    sleep = os.environ.get("FAKE_SLEEP", "0.2") if "/lr" in out else os.environ.get("FAKE_ALPHA_SLEEP", "1.5")
    time.sleep(float(sleep))
    if not os.path.exists(log) or open(log).read() != mine:
        print("my log.txt was moved or overwritten by another run")
        sys.exit(4)
    from loreal.pipeline.stage import mark_done
    mark_done(out, {{}})
""")


@pytest.fixture
def fake(tmp_path):
    return write_fake_python(tmp_path / "fake_python", FAKE)


def env(tmp_path, **extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "CALLS": str(tmp_path / "calls.txt"), **extra}


def calls(tmp_path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_two_pipelines_at_once_run_each_folder_once_and_both_finish(tmp_path, fake):
    cmd = [sys.executable, "-m", "loreal.cli", "pipeline", "lr-base2new", "--quiet", "--python", fake, "--root",
           str(tmp_path / "data"), "--output", str(tmp_path / "out"), "CoOp", "test_tiny", "test_tiny",
           "oxford_pets", "1", "96"]
    drivers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(tmp_path))
               for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in drivers]
    for rc, out, err in results:
        assert rc == 0, out + err
    ran = calls(tmp_path)
    assert len(ran) == 7 and len(set(ran)) == 7, ran  # the seven stages, each run once
    assert "[alpha] waiting for train.py pid" in results[0][1] + results[1][1]  # the drivers met
    assert not list((tmp_path / "out").rglob("log.interrupted.txt"))  # no live log set aside
    assert not list((tmp_path / "out").rglob(LOCK_FILE))  # every lock released


def test_two_grid_drivers_at_once_run_each_folder_once_and_both_finish(tmp_path, fake):
    cmd = [sys.executable, "-m", "loreal.cli", "reproduce", "--python", fake, "--root", str(tmp_path / "data"),
           "--output", str(tmp_path / "out"), "--benchmarks", "lr-base2new", "--baselines", "CoOp", "--sizes", "96",
           "144", "--seeds", "1", "--datasets", "dtd", "--config", "test_tiny", "--jobs", "2", "--poll", "0.05"]
    drivers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env(tmp_path)) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in drivers]
    for rc, out, err in results:
        assert rc == 0, out + err[-3000:]
    ran = calls(tmp_path)
    assert len(ran) == 13 and len(set(ran)) == 13, ran  # α once, six runs per φ: each once, by one driver
    assert "waiting for it" in results[0][2] + results[1][2]  # a driver waited for the other's run
    assert not list((tmp_path / "out").rglob("log.interrupted.txt"))


def test_grid_waits_for_a_previous_drivers_live_job_and_reports_one_it_cannot_ask_about(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("FAKE_SLEEP", "0")
    monkeypatch.setenv("FAKE_ALPHA_SLEEP", "0")
    grid = Grid(root=str(tmp_path / "data"), output=str(tmp_path / "out"), baselines=("CoOp",), datasets=("dtd",),
                benchmarks=("lr-base2new",), sizes=(96,), seeds=(1,), config="test_tiny")
    stages = expand(grid)
    beta = next(s for s in stages if s.name == "beta")
    record_job(beta.output_dir, "4242")  # a previous driver's SLURM job, still running
    finisher = threading.Timer(0.5, mark_done, (beta.output_dir, {"by": "job 4242"}))
    finisher.start()
    report = execute(stages, LocalBackend(gpu_slots(None, jobs=2), python=fake), poll_seconds=0.02,
                     stream=(said := StringIO()), jobs=queue(tmp_path, "4242 RUNNING\\n"))
    finisher.join()
    assert report.ok and [s.name for s in report.elsewhere] == ["beta"], report.summary()
    assert beta.output_dir not in calls(tmp_path) and len(calls(tmp_path)) == len(stages) - 1
    assert f"beta: {beta.output_dir} is being run by slurm job 4242" in said.getvalue()
    assert "1 finished by another run meanwhile" in report.summary()

    # Without a scheduler to ask, a recorded job without its marker is taken as alive: not started, reported.
    (tmp_path / "calls.txt").unlink()
    for s in stages:
        os.remove(os.path.join(s.output_dir, MARKER))
    report = execute(stages, LocalBackend(gpu_slots(None), python=fake), poll_seconds=0.02, stream=StringIO(),
                     jobs=queue(tmp_path, "", returncode=1))
    assert not report.ok and [s.name for s, _ in report.held] == ["beta"]
    assert beta.output_dir not in calls(tmp_path)
    assert {s.name for s, _ in report.blocked} == {"beta_new", "loreal", "loreal_new"}
    summary = report.summary()
    assert "1 held by another run (not started)" in summary and f"delete {beta.output_dir}/{JOB_FILE}" in summary


def test_the_runner_waits_for_a_live_holder_then_skips_what_it_finished(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.txt"))
    out = str(tmp_path / "run")
    lock = RunLock.acquire(out, command="another terminal")
    (tmp_path / "run" / "log.txt").write_text("live\n")

    def finish():
        mark_done(out, {})
        lock.release()

    threading.Timer(0.4, finish).start()
    lines = []
    result = run_stage(Stage("a", out, ("--output-dir", out)), python=fake, log=lines.append, quiet=True)
    assert result.status == "skipped" and calls(tmp_path) == []
    assert lines[0].startswith(f"[a] waiting for pid {os.getpid()} on host {this_host()}")
    assert (tmp_path / "run" / "log.txt").read_text() == "live\n"  # never set aside


# --------------------------------------------------------------------------- train.py itself
@pytest.mark.dassl
def test_a_second_train_py_on_a_held_folder_is_refused_touching_nothing(tmp_path):
    pytest.importorskip("dassl", reason="Dassl is not installed: the check runs train.py")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "loreal.trainers.train", "--root", str(tmp_path / "data"), "--seed", "1",
            "--trainer", "CoOp", "--config-file", str(REPO / "configs/trainers/CoOp/test_tiny.yaml"),
            "--dataset-config-file", str(REPO / "configs/datasets/oxford_pets.yaml"), "--output-dir", str(out)]
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    with RunLock.acquire(str(out), command="the first train.py"):
        (out / "log.txt").write_text("epoch 3 of the live run\n")
        before = snapshot(out)
        proc = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=300)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("train.py: error:")]
        assert errors and errors[0].startswith(f"train.py: error: {out} is being run by pid {os.getpid()} on host "
                                               f"{this_host()}"), proc.stderr[-2000:]
        assert "another --output-dir" in proc.stderr and "Traceback" not in proc.stderr
        assert snapshot(out) == before  # log.txt neither renamed nor appended to, nothing written

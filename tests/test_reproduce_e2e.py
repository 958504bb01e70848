"""The must-show run: a small real grid through train.py (CoOp, two φ, two seeds, LR base-to-novel and LR
cross-dataset on synthetic data with a tiny CLIP), one run killed half-way, ``loreal reproduce`` run again,
and every table of ``loreal results`` complete."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed: loreal reproduce runs train.py")
pytestmark = pytest.mark.slow

SIZES, SEEDS = ("32", "48"), ("1", "2")
KILLED = "lr48/xd/train/imagenet/shots_2/CoOp_LOREAL/test_tiny/seed2"  # a training run with dependents


def train_pid(output_dir: Path) -> int | None:
    """The pid of the train.py process writing ``output_dir`` (Linux /proc), if it runs."""
    needle = f"--output-dir\0{output_dir}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"loreal.trainers.train" in cmdline and needle in cmdline:
                return int(entry.name)
    return None


def kill_when_started(output_dir: Path, stop: threading.Event, killed: list) -> None:
    """SIGKILL that run once its Dassl log exists: it has started and has not finished (no marker yet)."""
    while not stop.is_set():
        pid = train_pid(output_dir)
        if pid and (output_dir / "log.txt").exists():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from loreal.clip import build_tiny_clip
    from loreal.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("reproduce")
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), root / "clip.pt")
    for dataset in ("oxford_pets", "imagenet", "caltech101"):
        write_synthetic_dataset(root / "data", dataset, num_classes=4, images_per_class=4, image_size=32)
    return root


def reproduce(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "loreal.cli", "reproduce", "--root", str(root / "data"), "--output",
           str(root / "out"), "--benchmarks", "lr-base2new", "lr-xd", "--baselines", "CoOp", "--sizes", *SIZES,
           "--seeds", *SEEDS, "--datasets", "oxford_pets", "--xd-targets", "caltech101", "--shots", "2",
           "--config", "test_tiny", "--jobs", "2", *extra,
           "--opts", "MODEL.BACKBONE.NAME", str(root / "clip.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOREAL_CACHE": str(root / "cache"), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_small_grid_survives_a_killed_run_and_every_table_is_complete(setup):
    root = setup
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_when_started, args=(root / "out" / KILLED, stop, killed), daemon=True)
    watcher.start()
    first = reproduce(root)
    out, err = first.communicate(timeout=3000)
    stop.set()
    assert killed, f"the run to kill never started:\n{out}\n{err[-3000:]}"
    assert first.returncode == 1, err[-3000:]
    assert f"FAILED loreal: {root / 'out' / KILLED} (exit -9)" in out  # reported, not skipped
    assert "not run because a run they need failed" in out and "loreal@caltech101" in out
    assert "[reproduce] done 0/52 · running 0 · failed 0 · left 52" in err  # live progress (52 runs)
    assert not (root / "out" / KILLED / "loreal_done.json").exists()

    second = reproduce(root)
    out, err = second.communicate(timeout=3000)
    assert second.returncode == 0, out[-3000:] + err[-3000:]
    assert "was interrupted; running it again there" in err
    assert "52 runs: 50 done before (skipped), 2 run now, 0 failed" in out  # the killed run and its evaluation

    results = subprocess.run([sys.executable, "-m", "loreal.cli", "results", str(root / "out"), "--no-csv"],
                             capture_output=True, text=True, timeout=300)
    assert results.returncode == 0, results.stderr
    tables = results.stdout.split("## Base-to-novel")[0]  # the paper tables (α's own 224 runs follow)
    for title in ("LR base-to-novel, φ = 32", "LR base-to-novel, φ = 48", "LR cross-dataset (ImageNet → 10 datasets), "
                  "φ = 32", "LR cross-dataset (ImageNet → 10 datasets), φ = 48", "Summary: LR base-to-novel",
                  "Summary: LR cross-dataset"):
        assert f"## {title}" in tables, title
    assert "—" not in tables and "seeds)" not in tables, tables  # every cell there, with both seeds

"""``loreal demo``: the four stages on synthetic data and a tiny CLIP, and the honest note."""
import subprocess
import sys

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed: loreal demo runs train.py")
pytestmark = pytest.mark.slow


def test_demo_runs_the_pipeline_and_says_the_weights_are_random(tmp_path):
    cmd = [sys.executable, "-m", "loreal.cli", "demo", "--baseline", "CoOp", "--epochs", "1", "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "| CoOp (trained at 96) |" in first.stdout and "| CoOp + LOREAL |" in first.stdout
    assert "weights are random" in first.stdout and "not the method" in first.stdout
    assert (tmp_path / "stage3_loreal_96/LOREAL/model.pth.tar-1").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # finished stages are kept, not redone
    assert again.returncode == 0 and again.stdout.count("done before, kept") == 5
    assert again.stdout.split("| CoOp + LOREAL |")[1].splitlines()[0] == first.stdout.split("| CoOp + LOREAL |")[1].splitlines()[0]

"""A tiny CLIP file and a synthetic OxfordPets-layout dataset for the end-to-end pipeline tests."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import torch

from loreal.clip import build_tiny_clip
from loreal.data.synthetic import write_synthetic_dataset

SHOTS = "4"


def write_env(root: Path) -> Path:
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), root / "tiny_clip.pt")
    write_synthetic_dataset(root / "data", "oxford_pets", num_classes=4, images_per_class=8, image_size=32)
    return root


def environ(root: Path, **extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "LOREAL_CACHE": str(root / "cache"), **extra}


def pipeline(root: Path, *args: str, cwd: Path, output: Path, **popen) -> subprocess.CompletedProcess:
    """``loreal pipeline ARGS... MODEL.BACKBONE.NAME <tiny>`` run from ``cwd``."""
    name, *rest = args
    cmd = [sys.executable, "-m", "loreal.cli", "pipeline", name, "--quiet", "--root", str(root / "data"), "--shots",
           SHOTS, "--output", str(output), *rest, "MODEL.BACKBONE.NAME", str(root / "tiny_clip.pt")]
    return subprocess.run(cmd, cwd=cwd, env=environ(root), capture_output=True, text=True, timeout=900, **popen)


def write_fake_python(path: Path, script: str) -> str:
    """An executable standing in for the interpreter: ``script`` (``{python}`` = the real one) plays train.py."""
    path.write_text(script.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)

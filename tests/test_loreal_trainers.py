"""LOREAL trainers through train.py: the four-stage script end to end for every baseline, the
embedding cache across runs, and the clear errors for bad stage inputs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl is not installed: the LOREAL trainers and train.py cannot be tested "
                                    "(install it from https://github.com/KaiyangZhou/Dassl.pytorch, see README)")

from loreal.clip import build_tiny_clip  # noqa: E402
from loreal.data.synthetic import write_synthetic_dataset  # noqa: E402
from loreal.results import parse_log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINES = ["CoOp", "MaPLe", "MMA", "MMRL"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("loreal_runs")
    clip_file = root / "tiny_clip.pt"
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), clip_file)
    write_synthetic_dataset(root / "data", "oxford_pets", num_classes=4, images_per_class=8, image_size=32)
    write_synthetic_dataset(root / "data", "caltech101", num_classes=3, images_per_class=4, image_size=32)
    return root


def run_script(env, *args, output="output", extra=()):
    environ = {**os.environ, "DATA": str(env / "data"), "SHOTS": "4", "OUTPUT": str(env / output),
               "LOREAL_CACHE": str(env / "cache"), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
               "LOREAL_CPU_AUTOCAST": "bf16"}
    return subprocess.run(["bash", "scripts/lr_base2new.sh", *args, "MODEL.BACKBONE.NAME", str(env / "tiny_clip.pt"),
                           *extra], cwd=REPO, env=environ, capture_output=True, text=True, timeout=600)


def run_train(env, *args):
    environ = {**os.environ, "LOREAL_CACHE": str(env / "cache"), "OMP_NUM_THREADS": "1", "LOREAL_CPU_AUTOCAST": "bf16"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=environ, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def pipelines(env):
    """The four-stage script once per baseline (φ = 96), α and β distinct runs, each tiny config with its
    shipped config's precision (CoOp/MaPLe fp16 -> fp32 on the CPU; MMA/MMRL amp -> bf16 autocast here)."""
    done = {}
    for name in BASELINES:
        proc = run_script(env, name, "test_tiny", "test_tiny", "oxford_pets", "1", "96")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        done[name] = proc
    return done


def stage_dirs(env, name):
    out = env / "output"
    tail = f"oxford_pets/shots_4/{{}}/test_tiny/seed1"
    return {"alpha": out / "base2new/train_base" / tail.format(name),
            "beta": out / "lr96/base2new/train_base" / tail.format(name),
            "beta_new": out / "lr96/base2new/test_new" / tail.format(name),
            "loreal": out / "lr96/base2new/train_base" / tail.format(f"{name}_LOREAL"),
            "loreal_new": out / "lr96/base2new/test_new" / tail.format(f"{name}_LOREAL")}


@pytest.mark.parametrize("name", BASELINES)
def test_four_stage_script_runs_end_to_end(env, pipelines, name):
    dirs = stage_dirs(env, name)
    for stage, folder in dirs.items():
        assert parse_log(folder / "log.txt") is not None, f"{stage}: no accuracy in {folder}/log.txt"
    assert "Image size 96" in (dirs["beta"] / "log.txt").read_text()
    assert "Image size 96" not in (dirs["alpha"] / "log.txt").read_text()
    ckpt = torch.load(dirs["loreal"] / "LOREAL/model.pth.tar-1", weights_only=True)
    assert all(key.startswith("nets.") for key in ckpt["state_dict"])  # the meta-nets only
    students = ckpt["meta"]["loreal"]["students"]
    assert Path(students["alpha"]["path"]).parent.parent == dirs["alpha"]
    assert Path(students["beta"]["path"]).parent.parent == dirs["beta"]
    log = (dirs["loreal"] / "log.txt").read_text()
    assert "hld" in log and "lld" in log and "acc_alpha" in log  # both distillation terms and the teacher
    cached = name in ("MaPLe", "MMRL")  # their LOREAL configs train from cached embeddings
    assert ("Embedding cache:" in log) is cached
    assert "Embedding cache" not in (dirs["loreal_new"] / "log.txt").read_text()  # evaluation never builds one


def test_results_table_has_baseline_and_loreal(env, pipelines):
    proc = subprocess.run([sys.executable, "-m", "loreal.cli", "results", str(env / "output/lr96/base2new"), "--no-csv"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in BASELINES:
        assert f"{name}/test_tiny" in proc.stdout and f"{name}_LOREAL/test_tiny" in proc.stdout


def test_cached_runs_reuse_the_cache_and_rebuild_when_beta_changes(env, pipelines):
    first = (stage_dirs(env, "MaPLe")["loreal"] / "log.txt").read_text()
    assert "Embedding cache: built" in first
    dirs = stage_dirs(env, "MaPLe")
    args = ["--root", str(env / "data"), "--seed", "1", "--trainer", "MaPLe_LOREAL",
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", "configs/trainers/MaPLe_LOREAL/test_tiny.yaml", "DATASET.NUM_SHOTS", "4",
            "DATASET.SUBSAMPLE_CLASSES", "base", "INPUT.SIZE", "(96, 96)", "MODEL.BACKBONE.NAME",
            str(env / "tiny_clip.pt"), "TRAINER.LOREAL.ALPHA_CHECKPOINT", str(dirs["alpha"])]
    again = run_train(env, "--output-dir", str(env / "again"), *args, "TRAINER.LOREAL.BETA_CHECKPOINT", str(dirs["beta"]))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Embedding cache: reused" in (env / "again/log.txt").read_text()
    other = run_train(env, "--output-dir", str(env / "other_beta"), *args, "TRAINER.LOREAL.BETA_CHECKPOINT",
                      str(dirs["alpha"]), "TRAINER.LOREAL.CHECK_ROLES", "False")  # another β: α's file for both
    assert other.returncode == 0, other.stderr[-2000:]
    assert "Embedding cache: built" in (env / "other_beta/log.txt").read_text()
    assert len(list((env / "cache").glob("embeddings-*.pt"))) >= 2  # the first cache is still there


def loreal_args(env, name, out, *opts):
    dirs = stage_dirs(env, name)
    return ["--root", str(env / "data"), "--seed", "1", "--trainer", f"{name}_LOREAL",
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
            "--config-file", f"configs/trainers/{name}_LOREAL/test_tiny.yaml", "--output-dir", str(env / out),
            "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "INPUT.SIZE", "(96, 96)",
            "MODEL.BACKBONE.NAME", str(env / "tiny_clip.pt"),
            "TRAINER.LOREAL.BETA_CHECKPOINT", str(dirs["beta"]), *opts]


# Through train.py: each kind of mistake exits 2 with its message and no traceback. A missing checkpoint, a
# LOREAL checkpoint file and a missing bank are checked where they are raised (tests/test_checkpoints.py,
# tests/test_attributes_bank.py), without a process each.
@pytest.mark.parametrize("opts,message", [
    ((), "ALPHA_CHECKPOINT is empty: set it to the stage-1 output folder"),
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{maple_alpha}"), "is a MaPLe checkpoint, but this run trains CoOp"),
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{coop_alpha}", "TRAINER.LOREAL.K", "3"), "set TRAINER.LOREAL.K to 5"),
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{coop_loreal}"), "points at a LOREAL run"),
])
def test_bad_stage_inputs_name_the_fix(env, pipelines, opts, message):
    values = {"maple_alpha": str(stage_dirs(env, "MaPLe")["alpha"]), "coop_alpha": str(stage_dirs(env, "CoOp")["alpha"]),
              "coop_loreal": str(stage_dirs(env, "CoOp")["loreal"])}
    proc = run_train(env, *loreal_args(env, "CoOp", "bad", *[o.format(**values) for o in opts]))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", BASELINES)
def test_stage3_accuracy_equals_an_evaluation_only_reload(env, pipelines, name):
    """What stage 3 reports at its end is what its checkpoint gives when reloaded; evaluation needs
    neither α nor β passed (β comes from the checkpoint's record)."""
    dirs = stage_dirs(env, name)
    args = [a for a in loreal_args(env, name, f"reload_{name}") if a not in ("TRAINER.LOREAL.BETA_CHECKPOINT",
                                                                           str(dirs["beta"]))]
    proc = run_train(env, "--eval-only", "--model-dir", str(dirs["loreal"]), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert parse_log(env / f"reload_{name}/log.txt") == parse_log(dirs["loreal"] / "log.txt")
    assert "Student beta from the checkpoint's record" in (env / f"reload_{name}/log.txt").read_text()


def test_evaluation_without_a_model_dir_is_refused_and_never_marked_done(env):
    """Without --model-dir the meta-nets (and β) would be random: an accuracy, a marker, and a "result" in the tables."""
    beta = ("TRAINER.LOREAL.BETA_CHECKPOINT", str(stage_dirs(env, "CoOp")["beta"]))
    proc = run_train(env, "--eval-only", *[a for a in loreal_args(env, "CoOp", "no_model_dir") if a not in beta])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "evaluation needs trained meta-nets: pass --model-dir" in proc.stderr and "Traceback" not in proc.stderr
    assert not (env / "no_model_dir/loreal_done.json").exists()
    assert parse_log(env / "no_model_dir/log.txt") is None


def test_another_dataset_is_evaluated_with_the_training_bank(env, pipelines):
    from loreal.attributes import load_bank

    dirs = stage_dirs(env, "CoOp")
    trained = load_bank("oxford_pets").attributes
    args = ["--root", str(env / "data"), "--seed", "1", "--trainer", "CoOp_LOREAL", "--eval-only",
            "--model-dir", str(dirs["loreal"]), "--dataset-config-file", "configs/datasets/caltech101.yaml",
            "--config-file", "configs/trainers/CoOp_LOREAL/test_tiny.yaml", "INPUT.SIZE", "(96, 96)",
            "MODEL.BACKBONE.NAME", str(env / "tiny_clip.pt")]
    proc = run_train(env, "--output-dir", str(env / "xd_caltech"), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (env / "xd_caltech/log.txt").read_text()
    assert f"Attributes from the checkpoint (trained with them): {', '.join(trained)}" in log
    assert parse_log(env / "xd_caltech/log.txt") is not None
    refused = run_train(env, "--output-dir", str(env / "xd_caltech_bank"), *args,
                        "TRAINER.LOREAL.ATTRIBUTES", "caltech101")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"trained with the attributes {list(trained)}" in refused.stderr
    assert str(list(load_bank("caltech101").attributes)) in refused.stderr


@pytest.mark.parametrize("opts,message", [
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{alpha}", "TRAINER.LOREAL.BETA_CHECKPOINT", "{alpha}"),
     "was trained at 224x224, but student beta must be trained at phi = INPUT.SIZE = 96"),
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{beta}", "TRAINER.LOREAL.BETA_CHECKPOINT", "{beta}"),
     "was trained at 96x96, but student alpha must be trained at the standard size"),
    (("TRAINER.LOREAL.ALPHA_CHECKPOINT", "{alpha}"), "BETA_CHECKPOINT is empty: set it to the stage-2 output folder"),
])
def test_students_are_checked_against_their_roles(env, pipelines, opts, message):
    dirs = stage_dirs(env, "CoOp")
    values = {"alpha": str(dirs["alpha"]), "beta": str(dirs["beta"])}
    args = [a for a in loreal_args(env, "CoOp", "roles") if a not in ("TRAINER.LOREAL.BETA_CHECKPOINT", str(dirs["beta"]))]
    proc = run_train(env, *args, *[o.format(**values) for o in opts])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "CHECK_ROLES False" in proc.stderr


def test_the_one_checkpoint_ablation_needs_the_switch(env, pipelines):
    dirs = stage_dirs(env, "CoOp")
    args = [a for a in loreal_args(env, "CoOp", "one_ckpt") if a not in ("TRAINER.LOREAL.BETA_CHECKPOINT", str(dirs["beta"]))]
    proc = run_train(env, *args, "TRAINER.LOREAL.ALPHA_CHECKPOINT", str(dirs["alpha"]), "TRAINER.LOREAL.CHECK_ROLES", "False")
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (env / "one_ckpt/log.txt").read_text()
    assert f"Student beta: {dirs['alpha']}" in log

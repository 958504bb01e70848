"""The results command (seed means, base-to-novel HM, Markdown and CSV) and the run scripts' folder
layout it reads. No Dassl needed."""
import csv
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loreal.cli import main as cli_main
from loreal.errors import MissingFileError
from loreal.results import collect, harmonic_mean, pair_base_to_new, parse_log, summarize, to_markdown

REPO = Path(__file__).resolve().parents[1]

TRAIN_LOG = """Loading trainer: CoOp
epoch [1/5] batch [1/10] loss 1.0
Evaluate on the *val* set
=> result
* accuracy: 11.0%
Checkpoint saved to x/prompt_learner/model.pth.tar-5
Finish training
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: 100
* correct: {correct}
* accuracy: {acc}%
* error: 0.0%
Elapsed: 0:00:01
"""
TEST_LOG = """Loading weights to prompt_learner from "x" (epoch = 5)
Evaluate on the *test* set
=> result
* total: 100
* accuracy: {acc}%
* macro_f1: 1.0%
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def b2n_dir(root: Path, stage: str, dataset: str, seed: int, method: str = "CoOp/vit_b16_ctxv1") -> Path:
    return root / "base2new" / stage / dataset / "shots_16" / method / f"seed{seed}"


@pytest.fixture
def runs(tmp_path):
    """Fake output tree: two datasets x three seeds, base from training logs, new from test logs."""
    base = {"oxford_pets": [80.0, 82.0, 84.0], "dtd": [60.0, 62.0, 64.0]}
    new = {"oxford_pets": [70.0, 71.0, 72.0], "dtd": [30.0, 30.0, 30.0]}
    for dataset in base:
        for seed, (b, n) in enumerate(zip(base[dataset], new[dataset]), start=1):
            write(b2n_dir(tmp_path, "train_base", dataset, seed) / "log.txt", TRAIN_LOG.format(acc=b, correct=int(b)))
            write(b2n_dir(tmp_path, "test_new", dataset, seed) / "log.txt", TEST_LOG.format(acc=n))
    for seed, acc in ((1, 40.0), (2, 44.0)):
        write(tmp_path / "evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/eurosat" / f"seed{seed}" / "log.txt",
              TEST_LOG.format(acc=acc))
    return tmp_path


# ------------------------------------------------------------------------------------------------
# Parsing one log

def test_train_log_reads_the_test_after_finish_training_not_the_val_before(tmp_path):
    write(tmp_path / "log.txt", TRAIN_LOG.format(acc=77.7, correct=77))
    assert parse_log(tmp_path / "log.txt") == 77.7


def test_eval_log_reads_the_last_accuracy_after_the_first_result(tmp_path):
    write(tmp_path / "log.txt", "* accuracy: 5.0%\n" + TEST_LOG.format(acc=66.6) + TEST_LOG.format(acc=67.5))
    assert parse_log(tmp_path / "log.txt") == 67.5


def test_unfinished_log_has_no_accuracy(tmp_path):
    write(tmp_path / "log.txt", "epoch [1/5] batch [1/10] loss 1.0\n")
    assert parse_log(tmp_path / "log.txt") is None
    write(tmp_path / "log2.txt", TRAIN_LOG.split("Deploy")[0])  # finished, but TEST.NO_TEST: only a val result
    assert parse_log(tmp_path / "log2.txt") is None


def test_harmonic_mean_matches_published_numbers():
    assert harmonic_mean(83.20, 76.80) == pytest.approx(79.87, abs=0.005)  # MMA
    assert harmonic_mean(82.28, 75.14) == pytest.approx(78.55, abs=0.005)  # MaPLe
    assert harmonic_mean(0.0, 0.0) == 0.0


# ------------------------------------------------------------------------------------------------
# Seeds, pairing, HM of the averages

def test_seeds_are_averaged_and_hm_comes_from_the_averaged_base_and_new(runs):
    rows, rest = summarize(runs)
    by_dataset = {r.dataset: r for r in rows}
    pets, dtd = by_dataset["oxford_pets"], by_dataset["dtd"]
    assert (pets.base.mean, pets.new.mean) == (82.0, 71.0)
    assert pets.hm == pytest.approx(2 * 82 * 71 / (82 + 71))
    assert dtd.hm == pytest.approx(2 * 62 * 30 / 92)
    assert pets.method == "CoOp/vit_b16_ctxv1" and pets.shots == "shots_16" and pets.setting == "base2new"
    assert [e.path for e in rest] == ["evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/eurosat"]
    assert rest[0].mean == 42.0 and rest[0].std == 2.0  # population std, as upstream (numpy)

    table = to_markdown(rows, rest)
    # average row: mean base 72, mean new 50.5, HM of those (not the mean of the two HMs, 58.27)
    assert "| **Average (2)** | 72.00 | 50.50 | 59.36 |" in table
    assert "| oxford_pets | 82.00 | 71.00 | 76.10 | 3/3 |" in table
    assert "| evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/eurosat | 42.00 | 2.00 | 2 |" in table


def test_test_base_beats_training_log_and_half_pairs_are_kept(runs):
    for seed in (1, 2, 3):
        write(b2n_dir(runs, "test_base", "dtd", seed) / "log.txt", TEST_LOG.format(acc=90.0))
    write(b2n_dir(runs, "train_base", "eurosat", 1) / "log.txt", TRAIN_LOG.format(acc=50.0, correct=50))
    rows, _ = summarize(runs)
    by_dataset = {r.dataset: r for r in rows}
    assert by_dataset["dtd"].base.mean == 90.0
    assert by_dataset["eurosat"].new is None and by_dataset["eurosat"].hm is None
    assert "| eurosat | 50.00 |  |  | 1/0 |" in to_markdown(rows, [])


@pytest.fixture
def logging_enabled():
    """Dassl's import disables logging below ERROR process-wide; other test modules may import it."""
    level = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    yield
    logging.disable(level)


def test_repeated_runs_and_unfinished_seeds_are_ignored(runs, caplog, logging_enabled):
    write(b2n_dir(runs, "test_new", "dtd", 1) / "log.txt-2026-01-01-00-00-00", TEST_LOG.format(acc=99.0))
    write(b2n_dir(runs, "test_new", "dtd", 4) / "log.txt", "epoch [1/5] batch [1/10]\n")
    experiments = collect(runs)
    new = experiments["base2new/test_new/dtd/shots_16/CoOp/vit_b16_ctxv1"]
    assert sorted(new.seeds) == ["seed1", "seed2", "seed3"] and new.mean == 30.0
    assert "no test accuracy" in caplog.text


def test_methods_and_shots_get_their_own_tables(runs):
    for seed in (1, 2):
        write(b2n_dir(runs, "train_base", "dtd", seed, "MaPLe/vit_b16_c2_ep5_batch4_2ctx") / "log.txt",
              TRAIN_LOG.format(acc=70.0, correct=70))
    rows, _ = pair_base_to_new(collect(runs))
    assert {r.method for r in rows} == {"CoOp/vit_b16_ctxv1", "MaPLe/vit_b16_c2_ep5_batch4_2ctx"}
    table = to_markdown(rows, [])
    assert "## Base-to-novel: CoOp/vit_b16_ctxv1 (shots_16, base2new)" in table
    assert "## Base-to-novel: MaPLe/vit_b16_c2_ep5_batch4_2ctx (shots_16, base2new)" in table


# ------------------------------------------------------------------------------------------------
# The command

def test_results_command_prints_markdown_and_writes_csv(runs, capsys):
    out_csv = runs / "tables" / "r.csv"
    assert cli_main(["results", str(runs), "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert "| Dataset | Base | New | HM | Seeds (base/new) |" in printed and str(out_csv) in printed
    with out_csv.open() as f:
        records = list(csv.DictReader(f))
    avg = next(r for r in records if r["dataset"] == "Average")
    assert (avg["base"], avg["new"], avg["hm"]) == ("72.00", "50.50", "59.36")
    pets = next(r for r in records if r["dataset"] == "oxford_pets")
    assert (pets["hm"], pets["seeds_base"], pets["seeds_new"]) == ("76.10", "3", "3")
    other = next(r for r in records if r["experiment"])
    assert (other["accuracy"], other["std"], other["seeds"]) == ("42.00", "2.00", "2")


def test_results_command_default_csv_and_no_csv(runs, capsys):
    assert cli_main(["results", str(runs), "--no-csv"]) == 0
    assert not (runs / "results.csv").exists()
    assert cli_main(["results", str(runs)]) == 0
    assert (runs / "results.csv").is_file()


def test_results_errors_name_the_fix(tmp_path, capsys):
    with pytest.raises(MissingFileError, match="not a folder"):
        summarize(tmp_path / "nope")
    with pytest.raises(MissingFileError, match=r"seed<N>/log.txt"):
        summarize(tmp_path)
    assert cli_main(["results", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_results_module_does_not_import_dassl():
    code = "import sys, loreal.results; print('dassl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------
# Scripts: the folders they write are the ones the results command pairs

BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="the run scripts need bash")


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run scripts/<name> from the repo root with PYTHON=echo (prints the train.py command)."""
    environ = {**os.environ, "PYTHON": "echo", **env}
    return subprocess.run([BASH, f"scripts/{name}", *args], cwd=REPO, env=environ, capture_output=True, text=True)


@needs_bash
def test_base2new_scripts_use_the_upstream_folders(tmp_path):
    out = tmp_path / "output"
    train = script("base2new_train.sh", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "oxford_pets", "0", OUTPUT=str(out),
                   DATA="/datasets")
    assert train.returncode == 0, train.stderr
    argv = train.stdout.split()
    run_dir = f"{out}/base2new/train_base/oxford_pets/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed0"
    assert argv[:1] == ["train.py"] and argv[argv.index("--output-dir") + 1] == run_dir
    assert argv[argv.index("--root") + 1] == "/datasets" and argv[argv.index("--seed") + 1] == "0"
    assert " DATASET.SUBSAMPLE_CLASSES base TASK B2N" in train.stdout

    test = script("base2new_test.sh", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "oxford_pets", "0",
                  "TEST.BATCH_SIZE", "8", OUTPUT=str(out), LOADEP="5")
    argv = test.stdout.split()
    assert argv[argv.index("--model-dir") + 1] == run_dir
    assert argv[argv.index("--output-dir") + 1] == run_dir.replace("train_base", "test_new")
    assert argv[argv.index("--load-epoch") + 1] == "5" and "--eval-only" in argv
    assert test.stdout.rstrip().endswith("DATASET.SUBSAMPLE_CLASSES new TASK B2N TEST.BATCH_SIZE 8")
    # results pairs exactly these two folders
    write(Path(run_dir) / "log.txt", TRAIN_LOG.format(acc=80.0, correct=80))
    write(Path(run_dir.replace("train_base", "test_new")) / "log.txt", TEST_LOG.format(acc=60.0))
    rows, _ = summarize(out)
    assert len(rows) == 1 and rows[0].hm == pytest.approx(harmonic_mean(80, 60))


@needs_bash
def test_cross_dataset_scripts_and_mmrl_options(tmp_path):
    out = str(tmp_path / "output")
    train = script("xd_train.sh", "MMRL", "vit_b16_cross_datasets", "imagenet", "1", OUTPUT=out)
    assert f"--output-dir {out}/imagenet/MMRL/vit_b16_cross_datasets_16shots/seed1" in train.stdout
    assert "TASK CD TRAINER.MMRL.REG_WEIGHT 0.2 TRAINER.MMRL.REP_DIM 512" in train.stdout
    test = script("xd_test.sh", "CoOp", "vit_b16_ep50_ctxv1", "eurosat", "1", OUTPUT=out)
    assert f"--output-dir {out}/evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/eurosat/seed1" in test.stdout
    assert f"--model-dir {out}/imagenet/CoOp/vit_b16_ep50_ctxv1_16shots/seed1" in test.stdout
    assert "--load-epoch" not in test.stdout and test.stdout.rstrip().endswith("--eval-only TASK CD")
    dg = script("dg_test.sh", "CoOp", "vit_b16_ep50_ctxv1", "imagenet_sketch", "2", OUTPUT=out)
    assert f"--output-dir {out}/evaluation/CoOp/vit_b16_ep50_ctxv1_16shots/imagenet_sketch/seed2" in dg.stdout


@needs_bash
def test_scripts_skip_existing_runs_and_reject_bad_arguments(tmp_path):
    out = tmp_path / "output"
    (out / "base2new/train_base/dtd/shots_16/CoOp/vit_b16_ctxv1/seed1").mkdir(parents=True)
    (out / "base2new/train_base/dtd/shots_16/CoOp/vit_b16_ctxv1/seed1/loreal_done.json").write_text("{}")
    skipped = script("base2new_train.sh", "CoOp", "vit_b16_ctxv1", "dtd", "1", OUTPUT=str(out))
    assert skipped.returncode == 0 and "skip this job" in skipped.stdout and "train.py" not in skipped.stdout
    assert script("base2new_train.sh", "CoOp").returncode == 2
    bad_cfg = script("xd_train.sh", "CoOp", "no_such_cfg", "imagenet", "1")
    assert bad_cfg.returncode == 2 and "configs/trainers/CoOp/no_such_cfg.yaml" in bad_cfg.stderr
    bad_dg = script("dg_test.sh", "CoOp", "vit_b16_ctxv1", "dtd", "1")
    assert bad_dg.returncode == 2 and "imagenetv2" in bad_dg.stderr
    for name in ("base2new_train.sh", "base2new_test.sh", "xd_train.sh", "xd_test.sh", "dg_test.sh", "common.sh"):
        text = (REPO / "scripts" / name).read_text()
        assert "cd ../.." not in text and "/path/to" not in text and "PATH/TO" not in text

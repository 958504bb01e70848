"""``loreal demo``: the pipeline's stages on the procedural world, its table, and a re-run that reuses them."""
import os
import subprocess
import sys

import pytest

from loreal.demo import format_table, table_rows
from loreal.world.stages import world_stages

SIZE_OPT = "INPUT.SIZE"


def _sizes(stage):
    args = list(stage.args)
    return args[args.index(SIZE_OPT) + 1]


def test_world_stages_train_alpha_at_the_standard_size_and_everything_else_at_phi():
    stages = world_stages("MaPLe", 32, 2, root="data", output="out", backbone="clip.pt", std_size=64)
    names = [s.name for s in stages]
    assert names == ["alpha", "alpha_std_new", "beta", "beta_new", "loreal", "loreal_new", "alpha_base", "alpha_new"]
    alpha, teacher = stages[:2]
    assert _sizes(alpha) == "(64, 64)" and "--eval-only" not in alpha.args
    # the teacher's own view: α on the new classes at the standard size
    assert _sizes(teacher) == "(64, 64)" and list(teacher.args)[list(teacher.args).index("--model-dir") + 1] == \
        alpha.output_dir and teacher.needs == (alpha.output_dir,)
    assert all(_sizes(s) == "(32, 32)" for s in stages[2:])  # never CLIP's 224: the world CLIP is 64 px
    for s in stages[1:]:
        args = list(s.args)
        assert args[args.index("MODEL.BACKBONE.NAME") + 1] == "clip.pt"
    loreal = list(stages[4].args)
    assert loreal[loreal.index("TRAINER.LOREAL.ALPHA_CHECKPOINT") + 1] == alpha.output_dir
    assert all(list(s.args)[list(s.args).index("--model-dir") + 1] == alpha.output_dir for s in stages[6:])


def test_table_has_zero_shot_alpha_beta_and_loreal_rows_with_hm():
    acc = {"alpha": 90.0, "alpha_std_new": 80.0, "alpha_base": 50.0, "alpha_new": 40.0, "beta": 60.0, "beta_new": 30.0, "loreal": 62.0, "loreal_new": 31.0}
    zero = {64: {"base": 80.0, "new": 70.0}, 32: {"base": 40.0, "new": 35.0}}
    text = format_table(table_rows("CoOp", 32, 64, acc, zero))
    assert "| zero-shot CLIP at 64 (standard) | 80.00 | 70.00 | 74.67 |" in text
    assert "| CoOp trained at 64 (α), tested at 64 | 90.00 | 80.00 | 84.71 |" in text
    assert "| CoOp trained at 64 (α), tested at 32 | 50.00 | 40.00 | 44.44 |" in text
    assert "| CoOp + LOREAL at 32 | 62.00 | 31.00 | 41.33 |" in text


@pytest.mark.slow
def test_demo_runs_the_pipeline_on_the_world_and_reuses_finished_stages(tmp_path):
    pytest.importorskip("dassl", reason="Dassl is not installed: loreal demo runs train.py")
    env = {**os.environ, "LOREAL_WORLD_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "loreal.cli", "demo", "--baseline", "CoOp", "--epochs", "1", "--pretrain-steps", "2",
           "--out", str(tmp_path / "demo"), "--jobs", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "| zero-shot CLIP at 32 |" in first.stdout and "| CoOp + LOREAL at 32 |" in first.stdout
    assert list((tmp_path / "cache").glob("tiny_clip_*.pt"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0 and "8 runs: 8 done before (skipped), 0 run now" in again.stdout
    assert "[stages] done 8/8 · running 0 · failed 0 · left 0" in again.stderr
    assert "(cached)" in again.stdout
    line = "| CoOp + LOREAL at 32 |"
    assert again.stdout.split(line)[1].splitlines()[0] == first.stdout.split(line)[1].splitlines()[0]


def test_bench_reads_what_the_loss_terms_did_from_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="the bench reads the trainers' TensorBoard files")
    from torch.utils.tensorboard import SummaryWriter

    from loreal.world.bench import loss_terms, terms_markdown

    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard"))
    for step, (ce, hld) in enumerate([(2.0, 6.0), (1.5, 4.0), (1.0, 1.0)]):
        writer.add_scalar("train/ce", ce, step)
        writer.add_scalar("train/hld", hld, step)
    writer.add_scalar("test/accuracy", 50.0, 0)
    writer.close()
    terms = loss_terms(tmp_path / "run")
    assert terms == {"ce": (2.0, 1.0), "hld": (6.0, 1.0)}  # first step, last epoch's mean (the last value)
    other = {"ce": (4.0, 3.0), "hld": (2.0, 2.0), "acc_alpha": (40.0, 30.0)}
    text = terms_markdown({("CoOp", 32, "+LOREAL"): [terms, other]}, [1, 2])
    assert "| CoOp | 32 | +LOREAL | 3.00 → 2.00 | 4.00 → 1.50 | — | — | 40.00 → 30.00 (1 of 2 seeds) |" in text


def test_bench_pairs_loreal_with_beta_seed_by_seed():
    from loreal.world.bench import paired_markdown

    rows = {("CoOp", 32, "β (trained at φ)"): [(20.0, 30.0), (25.0, 25.0), (30.0, 20.0)],
            ("CoOp", 32, "+LOREAL"): [(30.0, 30.0), (25.0, 25.0), (20.0, 20.0)],
            ("CoOp", 32, "+LOREAL, diagnostic lambda1_0.5"): [(24.0, 24.0), (26.0, 26.0), (24.0, 24.0)],
            ("CoOp", 32, "α (trained at 64) at 32"): [(1.0, 1.0)] * 3,  # not a LOREAL run: no pair
            ("MMA", 32, "+LOREAL"): [(1.0, 1.0)]}  # no β row: no pair
    text = paired_markdown(rows, [1, 2, 3])
    # HM per seed: β 24.00, 25.00, 24.00; +LOREAL 30.00, 25.00, 20.00 -> +6, 0, -4: one seed improves
    assert ("| CoOp | 32 | +LOREAL | 1: +6.00, 2: +0.00, 3: -4.00 | 0.00 ± 8.16 | 0.00 ± 0.00 | 0.67 ± 4.11 | "
            "1 of 3 |") in text
    assert ("| CoOp | 32 | +LOREAL, diagnostic lambda1_0.5 | 1: +0.00, 2: +1.00, 3: +0.00 | -0.33 ± 4.19 | "
            "-0.33 ± 4.19 | 0.33 ± 0.47 | 1 of 3 |") in text
    assert "| MMA |" not in text and "α (trained" not in text


def test_bench_writes_the_diagnostics_preset_as_world_configs(tmp_path):
    """--diagnostics: one world config per variant of the `diagnostics` preset, the world config with only that
    variant's TRAINER.LOREAL key changed (typed as YAML reads it), and never over a user's edited file."""
    import yaml

    from loreal.errors import ConfigError
    from loreal.pipeline.configs import read_trainer_config
    from loreal.reproduce.presets import PRESETS
    from loreal.world.bench import variant_config, diagnostics

    variants = diagnostics()
    assert list(variants) == [label for label, _ in PRESETS["diagnostics"].variants]
    assert variants["alpha_stop_grad"] == {"ALPHA_CONTENT": "stop_grad"} and variants["lambda1_0.25"] == {"LAMBDA1": 0.25}
    shipped = read_trainer_config("CoOp_LOREAL", "world")
    for name, keys in variants.items():
        path = variant_config("CoOp", name, tmp_path, keys)
        written = yaml.safe_load(open(path))
        assert written["TRAINER"]["LOREAL"] == {**shipped["TRAINER"]["LOREAL"], **keys}
        assert {k: v for k, v in written.items() if k != "TRAINER"} == {k: v for k, v in shipped.items() if k != "TRAINER"}
        assert variant_config("CoOp", name, tmp_path, keys) == path  # the same content again: reused
    edited = tmp_path / "world_lambda1_0.5.yaml"
    edited.write_text(edited.read_text() + "# my note\n")
    with pytest.raises(ConfigError, match="exists with other content"):
        variant_config("CoOp", "lambda1_0.5", tmp_path, variants["lambda1_0.5"])


def test_bench_json_keeps_stdout_for_the_json(monkeypatch, capsys):
    """`loreal world bench --json > file`: the progress lines (gates, step counts, seeds) go to stderr."""
    import json

    import loreal.world.bench as bench
    from loreal.cli import main

    def fake_run_bench(*, log, **kwargs):
        log("| gate | measured | needs | passes |")
        return {"seeds": kwargs["seeds"], "markdown": "| table |"}

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["world", "bench", "--seeds", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"seeds": [1], "markdown": "| table |"} and "| gate |" in err
    assert main(["world", "bench", "--seeds", "1"]) == 0
    out, err = capsys.readouterr()
    assert "| gate |" in out and out.rstrip().endswith("| table |")

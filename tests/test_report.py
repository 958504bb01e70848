"""The paper's tables and figures from LR output folders (loreal.report), checked against hand-computed
means on fixture logs in the pipeline's folder layout."""
import csv
import json
import statistics

import pytest

from loreal.cli import main as cli_main
from loreal.errors import ConfigError, MissingFileError
from loreal.report import figures
from loreal.report.layout import classify, locate
from loreal.report.tables import MISSING, PaperTables, render
from loreal.results import collect, harmonic_mean

TRAIN_LOG = "Finish training\nEvaluate on the *test* set\n=> result\n* accuracy: {acc}%\n"
TEST_LOG = "Evaluate on the *test* set\n=> result\n* total: 100\n* accuracy: {acc}%\n"
CFG, LCFG = "test_tiny", "test_tiny"

# (φ, stage, dataset, trainer, cfg) -> accuracy per seed (1, 2); absent entries are runs never made
B2N = {
    (96, "test_alpha_base", "dtd", "CoOp", CFG): (40.0, 44.0),
    (96, "test_alpha_new", "dtd", "CoOp", CFG): (20.0, 22.0),
    (96, "train_base", "dtd", "CoOp", CFG): (60.0, 64.0),
    (96, "test_new", "dtd", "CoOp", CFG): (30.0, 30.0),
    (96, "train_base", "dtd", "CoOp_LOREAL", LCFG): (70.0, 72.0),
    (96, "test_new", "dtd", "CoOp_LOREAL", LCFG): (41.0, 43.0),
    (96, "test_alpha_base", "eurosat", "CoOp", CFG): (50.0, 50.0),
    (96, "test_alpha_new", "eurosat", "CoOp", CFG): (25.0, 27.0),
    (96, "train_base", "eurosat", "CoOp", CFG): (80.0, 82.0),
    (96, "test_new", "eurosat", "CoOp", CFG): (50.0, 54.0),
    (96, "train_base", "eurosat", "CoOp_LOREAL", LCFG): (85.0, 85.0),
    (96, "test_new", "eurosat", "CoOp_LOREAL", LCFG): (60.0, 62.0),
    # φ = 144: dtd's LOREAL new run missing, eurosat's has one seed of two
    (144, "train_base", "dtd", "CoOp", CFG): (66.0, 68.0),
    (144, "test_new", "dtd", "CoOp", CFG): (40.0, 42.0),
    (144, "train_base", "dtd", "CoOp_LOREAL", LCFG): (75.0, 77.0),
    (144, "train_base", "eurosat", "CoOp", CFG): (90.0, 90.0),
    (144, "test_new", "eurosat", "CoOp", CFG): (60.0, 60.0),
    (144, "train_base", "eurosat", "CoOp_LOREAL", LCFG): (91.0, 93.0),
    (144, "test_new", "eurosat", "CoOp_LOREAL", LCFG): (70.0, None),
    # Table 6 ablation: LOREAL without LLD, in its own config folder
    (96, "train_base", "dtd", "CoOp_LOREAL", LCFG + "@table6-no_lld"): (65.0, 65.0),
    (96, "test_new", "dtd", "CoOp_LOREAL", LCFG + "@table6-no_lld"): (35.0, 37.0),
    (96, "train_base", "eurosat", "CoOp_LOREAL", LCFG + "@table6-no_lld"): (82.0, 84.0),
    (96, "test_new", "eurosat", "CoOp_LOREAL", LCFG + "@table6-no_lld"): (55.0, 55.0),
}
# (φ, stage, target, trainer) -> accuracies; ImageNet's own accuracy from the training log's final test
XD = {
    (96, "train", "imagenet", "CoOp"): (50.0, 52.0),
    (96, "train", "imagenet", "CoOp_LOREAL"): (55.0, 57.0),
    (96, "test", "imagenet", "CoOp_LOREAL"): (56.0, 58.0),  # an explicit evaluation beats the training log
    (96, "test_alpha", "imagenet", "CoOp"): (30.0, 32.0),
    (96, "test", "caltech101", "CoOp"): (70.0, 74.0),
    (96, "test", "caltech101", "CoOp_LOREAL"): (80.0, 80.0),
    (96, "test_alpha", "caltech101", "CoOp"): (60.0, 60.0),
    (96, "test", "dtd", "CoOp"): (30.0, 30.0),
    (96, "test", "dtd", "CoOp_LOREAL"): (40.0, 42.0),
    (96, "test", "imagenet_a", "CoOp"): (10.0, 12.0),
    (96, "test", "imagenet_a", "CoOp_LOREAL"): (20.0, 20.0),
    (96, "test", "imagenet_r", "CoOp"): (40.0, 40.0),
    # imagenet_r for LOREAL missing
}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def out(tmp_path):
    for (phi, stage, ds, trainer, cfg), accs in B2N.items():
        for seed, acc in enumerate(accs, start=1):
            if acc is not None:
                log = TRAIN_LOG if stage == "train_base" else TEST_LOG
                write(tmp_path / f"lr{phi}/base2new/{stage}/{ds}/shots_16/{trainer}/{cfg}/seed{seed}/log.txt",
                      log.format(acc=acc))
    for (phi, stage, target, trainer), accs in XD.items():
        for seed, acc in enumerate(accs, start=1):
            log = TRAIN_LOG if stage == "train" else TEST_LOG
            write(tmp_path / f"lr{phi}/xd/{stage}/{target}/shots_16/{trainer}/{CFG}/seed{seed}/log.txt",
                  log.format(acc=acc))
    # α itself at 224 (the ordinary run): not a low-resolution cell, stays in the generic tables
    write(tmp_path / f"base2new/train_base/dtd/shots_16/CoOp/{CFG}/seed1/log.txt", TRAIN_LOG.format(acc=90.0))
    return tmp_path


def mean_std(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values), statistics.pstdev(values)


def cell(values):
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}"


def b2n_mean(phi, stage, ds, trainer, cfg=CFG):
    return mean_std(B2N[(phi, stage, ds, trainer, cfg)])[0]


@pytest.fixture
def tables(out):
    cells, rest = classify(collect(out).values())
    assert [e.path for e in rest] == [f"base2new/train_base/dtd/shots_16/CoOp/{CFG}"]
    return PaperTables(cells)


def rows_of(table, first_column=None):
    """{(first cell carried down, second cell): remaining cells}."""
    found, current = {}, None
    for r in table.rows:
        current = r[0] or current
        found[(current, r[1])] = r[2:]
    return found


def test_locate_reads_the_pipeline_layout():
    key, priority = locate("lr96/base2new/test_alpha_new/dtd/shots_16/CoOp/cfg")
    assert (key.benchmark, key.phi, key.role, key.baseline, key.dataset, key.metric) == \
        ("b2n", 96, "alpha", "CoOp", "dtd", "new")
    key, priority = locate("runs/lr144/xd/train/imagenet/shots_4/MaPLe_LOREAL/cfg@dim-16")
    assert (key.setting, key.role, key.baseline, key.method, key.metric, priority) == \
        ("runs", "loreal", "MaPLe", "cfg@dim-16", "acc", 0)
    assert locate("base2new/train_base/dtd/shots_16/CoOp/cfg") is None  # α at 224: no φ
    assert locate("lr96/xd/test_alpha/dtd/shots_16/CoOp_LOREAL/cfg") is None


def test_b2n_table_cells_are_seed_means_with_std_and_hm_of_the_means(tables):
    table = next(t for t in tables.tables() if t.title.startswith("LR base-to-novel, φ = 96"))
    got = rows_of(table)
    assert got[("dtd", "CoOp")][:2] == [cell(B2N[(96, "train_base", "dtd", "CoOp", CFG)]),
                                        cell(B2N[(96, "test_new", "dtd", "CoOp", CFG)])]
    hm = harmonic_mean(62.0, 30.0)
    assert got[("dtd", "CoOp")][2] == f"{hm:.2f}"
    assert got[("dtd", "CoOp α (224) at 96")] == [cell((40.0, 44.0)), cell((20.0, 22.0)),
                                                  f"{harmonic_mean(42.0, 21.0):.2f}"]
    lor_hm = harmonic_mean(71.0, 42.0)
    gain = next(v for k, v in got.items() if k[0] == "dtd" and k[1].startswith("gain"))
    assert gain == [f"{71 - 62:+.2f}", f"{42 - 30:+.2f}", f"{lor_hm - hm:+.2f}"]
    # average: mean base and new over the datasets, HM of those
    base = (b2n_mean(96, "train_base", "dtd", "CoOp") + b2n_mean(96, "train_base", "eurosat", "CoOp")) / 2
    new = (b2n_mean(96, "test_new", "dtd", "CoOp") + b2n_mean(96, "test_new", "eurosat", "CoOp")) / 2
    assert got[("Average (2)", "CoOp")] == [f"{base:.2f}", f"{new:.2f}", f"{harmonic_mean(base, new):.2f}"]
    assert table.rows[0][:2] == ["Average (2)", "CoOp α (224) at 96"]  # the average block first, α first
    assert not any("no_lld" in r[1] for r in table.rows)  # ablations get their own table


def test_missing_runs_show_as_missing_never_zero(tables):
    table = next(t for t in tables.tables() if t.title.startswith("LR base-to-novel, φ = 144"))
    got = rows_of(table)
    assert got[("dtd", "CoOp + LOREAL")] == [cell((75.0, 77.0)), MISSING, MISSING]
    assert got[("eurosat", "CoOp + LOREAL")][1] == "70.00 ± 0.00 (1 of 2 seeds)"
    assert got[("Average (2)", "CoOp + LOREAL")] == [MISSING] * 3  # a hole: no average
    assert got[("dtd", "CoOp α (224) at 144")] == [MISSING] * 3  # α not evaluated at 144
    assert "0.00 ±" not in "".join(" ".join(r) for r in table.rows).replace("± 0.00", "")


def test_cross_dataset_and_domain_generalisation_tables(tables):
    all_tables = tables.tables()
    ce = next(t for t in all_tables if t.title.startswith("LR cross-dataset") and "φ = 96" in t.title)
    assert ce.header == ["Method", "imagenet (source)", "caltech101", "dtd", "Average (2)"]
    got = {r[0]: r[1:] for r in ce.rows}
    assert got["CoOp"] == [cell((50.0, 52.0)), cell((70.0, 74.0)), cell((30.0, 30.0)), f"{(72 + 30) / 2:.2f}"]
    assert got["CoOp + LOREAL"][0] == cell((56.0, 58.0))  # xd/test/imagenet beats the training log
    assert got["CoOp + LOREAL"][3] == f"{(80 + 41) / 2:.2f}"
    assert got["CoOp α (224) at 96"] == [cell((30.0, 32.0)), cell((60.0, 60.0)), MISSING, MISSING]
    gain = next(v for k, v in got.items() if k.startswith("gain"))
    assert gain == [f"{57 - 51:+.2f}", f"{80 - 72:+.2f}", f"{41 - 30:+.2f}", f"{(80 + 41) / 2 - 51:+.2f}"]
    dg = next(t for t in all_tables if t.title.startswith("LR domain generalisation"))
    assert dg.header == ["Method", "imagenet (source)", "imagenet_a", "imagenet_r", "Average (2)"]
    got = {r[0]: r[1:] for r in dg.rows}
    assert got["CoOp"][1:] == [cell((10.0, 12.0)), cell((40.0, 40.0)), f"{(11 + 40) / 2:.2f}"]
    assert got["CoOp + LOREAL"][1:] == [cell((20.0, 20.0)), MISSING, MISSING]


def test_summary_across_phi_and_ablation_table(tables):
    all_tables = tables.tables()
    summary = next(t for t in all_tables if t.title.startswith("Summary: LR base-to-novel"))
    assert summary.header == ["Method", "φ = 96", "φ = 144"]
    got = {r[0]: r[1:] for r in summary.rows}
    base96 = (71.0 + 85.0) / 2
    new96 = (42.0 + 61.0) / 2
    assert got["CoOp + LOREAL"] == [f"{harmonic_mean(base96, new96):.2f}", MISSING]
    base144, new144 = (67.0 + 90.0) / 2, (41.0 + 60.0) / 2
    assert got["CoOp"][1] == f"{harmonic_mean(base144, new144):.2f}"
    ablation = next(t for t in all_tables if t.title.startswith("Ablation 'table6': LR base-to-novel"))
    got = {r[0]: r[1:] for r in ablation.rows}
    assert set(got) == {"CoOp + LOREAL full", "CoOp + LOREAL no_lld"}
    assert got["CoOp + LOREAL no_lld"][0] == f"{harmonic_mean((65 + 83) / 2, (36 + 55) / 2):.2f}"
    assert got["CoOp + LOREAL full"][0] == f"{harmonic_mean(base96, new96):.2f}"


def test_expected_datasets_from_a_grid_make_holes_visible(out):
    cells, _ = classify(collect(out).values())
    tables = PaperTables(cells, expected={"lr-b2n": ["dtd", "eurosat", "caltech101"]}, seeds=3)
    table = tables.b2n_table(("", "shots_16", 96))
    got = rows_of(table)
    assert got[("caltech101", "CoOp")] == [MISSING] * 3
    assert got[("Average (3)", "CoOp")] == [MISSING] * 3
    assert got[("dtd", "CoOp")][0] == "62.00 ± 2.00 (2 of 3 seeds)"


def test_results_command_prints_paper_tables_writes_tidy_csv_and_figures(out, tmp_path, capsys):
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps({"benchmark": "resolution", "rows": [
        {"size": s, "ms_per_image": s / 10, "peak_mem_mb": s / 4} for s in (96, 144, 192, 224)]}))
    figs = tmp_path / "figs"
    assert cli_main(["results", str(out), "--figures", str(figs), "--cost", str(cost)]) == 0
    printed = capsys.readouterr().out
    assert "## LR base-to-novel, φ = 96 (shots_16)" in printed and "## Summary: LR cross-dataset" in printed
    assert f"## Base-to-novel: CoOp/{CFG} (shots_16, base2new)" in printed  # α at 224 in the generic tables
    with (out / "results_paper.csv").open() as f:
        records = list(csv.DictReader(f))
    rec = next(r for r in records if (r["benchmark"], r["phi"], r["role"], r["dataset"], r["metric"]) ==
               ("lr-b2n", "96", "baseline", "dtd", "base"))
    assert (float(rec["mean"]), float(rec["std"]), rec["seeds"]) == (62.0, 2.0, "2")
    missing = next(r for r in records if (r["phi"], r["role"], r["dataset"], r["metric"]) ==
                   ("144", "loreal", "dtd", "new"))
    assert missing["mean"] == "" and missing["seeds"] == ""

    from PIL import Image
    from matplotlib.image import imread

    for name, panels in (("accuracy_vs_phi", 3), ("accuracy_vs_cost", 2)):
        png, pdf = figs / f"{name}.png", figs / f"{name}.pdf"
        pixels = imread(png)
        assert pixels.ndim == 3 and pixels.shape[1] > 600 and pixels.shape[0] > 300
        axes = json.loads(Image.open(png).text["Axes"])
        assert len(axes) == panels and all(a["xlabel"] and a["ylabel"] for a in axes)
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000
    axes = json.loads(Image.open(figs / "accuracy_vs_phi.png").text["Axes"])
    assert axes[0]["xlabel"] == "input resolution φ (pixels)" and axes[0]["ylabel"].startswith("HM")
    axes = json.loads(Image.open(figs / "accuracy_vs_cost.png").text["Axes"])
    assert [a["xlabel"].split(" (")[0] for a in axes] == ["inference time", "inference peak memory"]


def test_figure_inputs_are_checked(out, tmp_path):
    tables = PaperTables(classify(collect(out).values())[0])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="loreal bench resolution --json"):
        figures.read_cost(bad)
    with pytest.raises(MissingFileError, match="loreal bench resolution --json >"):
        figures.read_cost(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match=r"no row for φ = \[144\]"):
        figures.accuracy_vs_cost(tables, {96: {"ms_per_image": 1.0, "peak_mem_mb": 1.0}}, tmp_path / "c")
    with pytest.raises(MissingFileError, match="run the grid first"):
        figures.accuracy_vs_phi(PaperTables({}), tmp_path / "p")


def test_rendered_markdown_has_every_table(tables):
    text = render(tables.tables())
    for title in ("LR base-to-novel, φ = 96", "LR base-to-novel, φ = 144", "LR cross-dataset (ImageNet → 10 "
                  "datasets), φ = 96", "LR domain generalisation (ImageNet → variants), φ = 96",
                  "Summary: LR base-to-novel", "Summary: LR domain generalisation", "Ablation 'table6'"):
        assert f"## {title}" in text

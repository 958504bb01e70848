"""``loreal results OUTPUT_DIR``: seed-averaged accuracies from Dassl logs, with base-to-novel HM.

The command over :mod:`loreal.report.logs` (which reads the logs, averages seeds and pairs base with new)
and, for runs of the low-resolution pipelines (``lr<φ>/`` folders), the paper's table layouts
(``loreal.report``: LR-B2N, LR-CE, LR-DG per φ, summaries across φ, ablations; ``--figures`` draws the
figures); a grid's manifest (``loreal reproduce``) names the cells it expects, so its holes show as missing.
No Dassl import here.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .errors import MissingFileError
# The log reading lives in the library; the names stay importable from here as before.
from .report.logs import (ACCURACY, CSV_FIELDS, SEED_DIR, TEST_START, TRAIN_END, B2NRow, Experiment,  # noqa: F401
                          average_row, collect, csv_rows, harmonic_mean, pair_base_to_new, parse_log, seed_std,
                          summarize, to_markdown, write_csv)


def measured_cost(sizes: Sequence[int]) -> dict[int, dict[str, float]]:
    """Inference cost per φ measured now (``loreal bench resolution``, ViT-B/16 architecture, random weights)."""
    import torch

    from .bench.resolution import run as bench_resolution

    device = "cuda" if torch.cuda.is_available() else "cpu"
    payload = bench_resolution("ViT-B/16", random_init=True, sizes=sorted(set(sizes) | {224}), device=device)
    return {r["size"]: r for r in payload["rows"]}


def run(args: argparse.Namespace) -> int:
    from .report import figures
    from .report.layout import classify
    from .report.tables import CSV_FIELDS as PAPER_FIELDS, PaperTables, render

    root = Path(args.output_dir)
    experiments = collect(root)
    if not experiments:
        summarize(root)  # raises the error naming the expected files
    cells, other = classify(experiments.values())
    rows, rest = pair_base_to_new({e.path: e for e in other})
    paper = PaperTables(cells, **expected_from_manifest(root)) if cells else None
    if paper:
        print(render(paper.tables()))
    if rows or rest:
        print(to_markdown(rows, rest))
    if not args.no_csv:
        path = Path(args.csv or root / "results.csv")
        write_csv(path, csv_rows(rows, rest))
        print(f"CSV written to {path}")
        if paper:
            paper_csv = path.with_name(path.stem + "_paper.csv")
            write_csv(paper_csv, paper.records, PAPER_FIELDS)
            print(f"Paper tables (tidy CSV) written to {paper_csv}")
    if args.figures:
        if not paper:
            raise MissingFileError(f"no low-resolution runs (lr<φ>/ folders) under {root} to draw figures from")
        out = Path(args.figures)
        written = figures.accuracy_vs_phi(paper, out / "accuracy_vs_phi")
        if args.cost:
            phis = [phi for bench in ("lr-b2n", "lr-ce", "lr-dg") for _, _, phi in paper.groups(bench)]
            cost = measured_cost(phis) if args.cost == "measure" else figures.read_cost(args.cost)
            written += figures.accuracy_vs_cost(paper, cost, out / "accuracy_vs_cost")
        print("Figures written: " + ", ".join(str(p) for p in written))
    return 0


def expected_from_manifest(root: Path) -> dict:
    """The datasets and seed count a grid's manifest promises (so its holes show as missing); {} without one."""
    from .reproduce.manifest import expected_cells

    return expected_cells(root)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the top-level ``results`` command."""
    parser = subparsers.add_parser("results", help="average seeds and compute base-to-novel HM from run logs",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder holding the runs (e.g. output/)")
    parser.add_argument("--csv", metavar="FILE", help="CSV to write (default: OUTPUT_DIR/results.csv)")
    parser.add_argument("--no-csv", action="store_true", help="print the Markdown tables only")
    parser.add_argument("--figures", metavar="DIR", help="also draw the paper's figures (PNG and PDF) into DIR")
    parser.add_argument("--cost", metavar="FILE|measure",
                        help="with --figures: accuracy against inference cost, from 'loreal bench resolution --json' "
                             "output saved in FILE, or 'measure' to time the image tower now")
    parser.set_defaults(func=run)
    return parser

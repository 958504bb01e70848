"""``loreal doctor``: before a grid, check every trainer on this machine in minutes (table, or JSON with --json).

A thin layer over :mod:`loreal.doctor.checks`: choose trainers and configs, run the rows, print them.
Exits 1 when a row fails, so a script can stop before submitting a grid.
"""
from __future__ import annotations

import argparse
import sys

import torch

COLUMNS = [("trainer", "trainer", "s"), ("config", "config", "s"), ("precision_ran", "precision (ran)", "s"),
           ("classes", "C", "d"), ("train_batch", "B train", "d"), ("test_batch", "B test", "d"), ("size", "φ", "d"),
           ("loss_rel_err", "loss err vs fp32", ".1e"), ("logits_rel_err", "logits err vs fp32", ".1e"),
           ("held_mb", "weights MiB", ".0f"), ("train_peak_mb", "train peak MiB", ".0f"),
           ("eval_peak_mb", "eval peak MiB", ".0f"), ("memory_budget_gib", "MEMORY_BUDGET GiB", "g"),
           ("train_ms", "train ms/step", ".0f"), ("eval_ms", "eval ms/batch", ".0f"), ("verdict_text", "verdict", "s"),
           ("fix", "fix", "s")]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor", help="preflight: one training step and one evaluation batch per trainer in its configured precision, "
                       "against fp32, with peak memory and a verdict",
        description="For each baseline and its *_LOREAL: one training step and one evaluation batch with the shipped "
                    "config's precision on this device, compared with fp32 (relative error of loss and logits), peak "
                    "memory against MEMORY_BUDGET and the device, time per step; a verdict per row and the fix for "
                    "what fails. Exits 1 when a row fails.")
    p.add_argument("--baselines", nargs="+", metavar="NAME", help="baselines to check (default: every registered one); "
                   "each comes with its *_LOREAL")
    p.add_argument("--config", nargs="+", default=[], metavar="[TRAINER=]NAME",
                   help="config name (or YAML path) for every trainer, or TRAINER=NAME for one (default: the shortest "
                        "name shipped for both the baseline and its *_LOREAL, e.g. CoOp's vit_b16_ep50)")
    p.add_argument("--backbone", help="CLIP name or checkpoint file, loaded as the trainers load it (default: random "
                   "weights of each config's MODEL.BACKBONE.NAME architecture)")
    p.add_argument("--classes", "-C", type=int, default=1000, help="number of classes (default 1000, ImageNet scale; "
                   "a few for a quick run)")
    p.add_argument("--batch", "-B", type=int, help="training batch size (default: each config's "
                   "DATALOADER.TRAIN_X.BATCH_SIZE)")
    p.add_argument("--test-batch", type=int, help="evaluation batch size (default: DATALOADER.TEST.BATCH_SIZE)")
    p.add_argument("--size", type=int, help="image size φ (default: each config's INPUT.SIZE)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--device-memory", type=float, metavar="GIB", help="judge memory against this many GiB instead of "
                   "the device's own (e.g. to plan for a smaller card)")
    p.add_argument("--tolerance", type=float, help="largest relative error against fp32 that passes (default: 20 "
                   "units of roundoff of the dtype that ran: 1%% in fp16, 8%% in bf16)")
    p.add_argument("--repeats", type=int, default=1, help="timed steps after the first, measured one (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config keys set in every YAML, e.g. --opts TRAINER.LOREAL.MEMORY_BUDGET 8")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def _title(result: dict, backbones: set[str]) -> str:
    judged = next((r["device_memory_mb"] for r in result["rows"] if "device_memory_mb" in r), 0.0)
    return (f"loreal doctor on {result['device']} ({judged / 1024:.1f} GiB judged, "
            f"90% usable), {', '.join(sorted(backbones))}, C = {result['classes']}; errors are relative to the same "
            f"step in fp32 (- where the run itself was fp32)")


def main(args: argparse.Namespace) -> int:
    from ..bench.common import report
    from ..errors import LorealError
    from .checks import Backbones, Options, check_trainer, error_row, summary
    from .configs import choose_configs, read_setup, trainers_of

    trainers = trainers_of(args.baselines)
    configs = choose_configs(trainers, args.config)
    device = torch.device(args.device)
    options = Options(classes=args.classes, train_batch=args.batch, test_batch=args.test_batch, size=args.size,
                      device=device, device_memory_gib=args.device_memory, repeats=args.repeats,
                      tolerance=args.tolerance, seed=args.seed)
    backbones = Backbones(args.backbone, device, args.seed)

    rows = []
    for trainer in trainers:
        try:
            setup = read_setup(trainer, configs[trainer], args.opts)
        except LorealError as exc:  # a trainer without a usable config is that row's failure
            rows.append(error_row(trainer, configs[trainer] or "-", f"{type(exc).__name__}: {exc}"))
        else:
            rows.append(check_trainer(setup, backbones, options, config_label=configs[trainer]))
        print(f"{trainer}: {rows[-1]['verdict']}", file=sys.stderr, flush=True)  # partial results of a long run
    for row in rows:  # table cells
        row["verdict_text"] = row["verdict"] if row["verdict"] == "ok" else "FAIL: " + "; ".join(row["problems"])
        row["fix"] = "; ".join(row["fixes"]) or None
    result = summary(rows, options)
    report(result, COLUMNS, _title(result, {r["backbone"] for r in rows if "backbone" in r}), args.json)
    return 0 if result["passed"] else 1

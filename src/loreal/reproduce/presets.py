"""Ablations and hyper-parameter sweeps as grid presets.

A preset adds, beside each full LOREAL run of the grid, LOREAL runs with a few ``TRAINER.LOREAL`` keys changed.
Each variant has its own config folder, ``{cfg}@{preset}-{label}`` (``loreal.report.layout.VARIANT_SEP``), so it
never overwrites the full run and ``loreal results`` makes one table per preset (rows: full, then each label).
α and β are the full runs' (shared, run once). Sweep values equal to the shipped configs' (D_s 32, τ 4, M 2,
λ1/λ2 1/2) are the full run itself and are not repeated. The paper's exact sweep points could not be read here
(its PDF was not retrievable); these bracket the defaults by factors of two.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..pipeline import Stage
from ..report.layout import LOREAL_SUFFIX, VARIANT_SEP


@dataclass(frozen=True)
class Preset:
    description: str
    variants: tuple[tuple[str, tuple[str, ...]], ...]  # (label, KEY VALUE opts)


def _sweep(key: str, values) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((f"{key}={v}", (f"TRAINER.LOREAL.{key}", str(v))) for v in values)


PRESETS: dict[str, Preset] = {
    "table6": Preset("Table 6: cross-bridging directions and the two distillation losses", (
        ("LR_to_St_only", ("TRAINER.LOREAL.BRIDGE", "lr_to_st")),
        ("St_to_LR_only", ("TRAINER.LOREAL.BRIDGE", "st_to_lr")),
        ("without_LLD", ("TRAINER.LOREAL.USE_LLD", "False")),
        ("without_HLD", ("TRAINER.LOREAL.USE_HLD", "False")),
    )),
    "dim": Preset("meta-net hidden width D_s (full: 32)", _sweep("HIDDEN_DIM", (8, 16, 64, 128))),
    "temp": Preset("HLD temperature τ (full: 4)", _sweep("TEMP", (1.0, 2.0, 8.0))),
    "m": Preset("slots per attribute M (full: 2)", _sweep("M", (1, 3, 4))),
    "lambda": Preset("loss weights λ1/λ2 (full: 1/2)", tuple(
        (f"LAMBDA1={a},LAMBDA2={b}", ("TRAINER.LOREAL.LAMBDA1", str(a), "TRAINER.LOREAL.LAMBDA2", str(b)))
        for a, b in ((0.5, 2.0), (2.0, 2.0), (1.0, 1.0), (1.0, 4.0)))),
    # Not the method: variants that ask why +LOREAL does not beat β where it does not (the world bench runs them
    # with --diagnostics): a fixed target for LLD (α's slot content detached), and a weaker pull towards α.
    "diagnostics": Preset("diagnostics: α's slot content through a stop-gradient; HLD's weight λ1 halved and quartered", (
        ("alpha_stop_grad", ("TRAINER.LOREAL.ALPHA_CONTENT", "stop_grad")),
        ("lambda1_0.5", ("TRAINER.LOREAL.LAMBDA1", "0.5")),
        ("lambda1_0.25", ("TRAINER.LOREAL.LAMBDA1", "0.25")),
    )),
}


def _is_loreal(stage: Stage) -> bool:
    args = list(stage.args)
    return args[args.index("--trainer") + 1].endswith(LOREAL_SUFFIX)


def variant_dir(output_dir: str, preset: str, label: str) -> str:
    """``.../{B}_LOREAL/{cfg}/seed{s}`` -> ``.../{B}_LOREAL/{cfg}@{preset}-{label}/seed{s}``."""
    head, seed = output_dir.rstrip("/").rsplit("/", 1)
    return f"{head}{VARIANT_SEP}{preset}-{label}/{seed}"


def apply_variant(stages: list[Stage], preset: str, label: str, opts: tuple[str, ...]) -> list[Stage]:
    """The pipeline's LOREAL stages moved to the variant's folders, with ``opts`` last (they win in yacs)."""
    moved = {s.output_dir: variant_dir(s.output_dir, preset, label) for s in stages if _is_loreal(s)}
    return [Stage(f"{s.name}[{preset}-{label}]", moved[s.output_dir],
                  tuple(moved.get(a, a) for a in s.args) + opts, tuple(moved.get(n, n) for n in s.needs))
            for s in stages if s.output_dir in moved]

"""``loreal world bench``: the LR base-to-novel pipeline on the world for every baseline, φ and seed, plus
the Table 6 ablations (bridge directions, without LLD, without HLD) for one baseline and, on request, the
``diagnostics`` preset's variants for one baseline; seed means ± std.

Every stage runs through :mod:`loreal.pipeline` (as ``loreal demo``); finished stages are reused, so an
interrupted bench resumes. Ablations and diagnostics are LOREAL configs written next to the runs (the world
config with a ``TRAINER.LOREAL`` key changed): their file name puts them in their own output folder, while
α and β are shared with the main runs.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

#: Table 6 of the paper: name -> TRAINER.LOREAL overrides.
ABLATIONS: dict[str, dict[str, Any]] = {
    "bridge_lr_to_st": {"BRIDGE": "lr_to_st"},  # only α's prompt is filled from β's embedding
    "bridge_st_to_lr": {"BRIDGE": "st_to_lr"},  # only β's prompt is filled from α's embedding
    "bridge_none": {"BRIDGE": "none"},  # each student fills its own prompt
    "no_lld": {"USE_LLD": False},
    "no_hld": {"USE_HLD": False},
}


def diagnostics() -> dict[str, dict[str, Any]]:
    """The ``diagnostics`` preset (:mod:`loreal.reproduce.presets`) as ``name -> TRAINER.LOREAL overrides``,
    each value read as YAML reads it (``"0.5"`` -> 0.5)."""
    import yaml

    from ..reproduce.presets import PRESETS

    prefix, variants = "TRAINER.LOREAL.", {}
    for label, opts in PRESETS["diagnostics"].variants:
        keys, values = opts[::2], opts[1::2]
        assert all(k.startswith(prefix) for k in keys), opts  # the world configs change only the method's keys
        variants[label] = {k.removeprefix(prefix): yaml.safe_load(v) for k, v in zip(keys, values)}
    return variants


def variant_config(baseline: str, name: str, folder: Path, overrides: dict[str, Any]) -> str:
    """Write ``world_<name>.yaml``: the world LOREAL config with ``overrides`` (an ablation's or a diagnostic's
    ``TRAINER.LOREAL`` keys); an existing file with other content is an error (a user's edited config is never
    overwritten)."""
    import yaml

    from ..pipeline.configs import read_trainer_config, trainer_config

    source = trainer_config(f"{baseline}_LOREAL", "world")
    data = read_trainer_config(f"{baseline}_LOREAL", "world")
    data["TRAINER"]["LOREAL"].update(overrides)
    text = f"# loreal world bench: {source} with TRAINER.LOREAL {overrides}\n" + yaml.safe_dump(data, sort_keys=False)
    path = folder / f"world_{name}.yaml"
    if path.exists() and path.read_text() != text:
        raise ConfigError(f"{path} exists with other content: move it away or pick another --out")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _mean_std(values: list[float]) -> str:
    from ..report.logs import seed_std

    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {seed_std(values):.2f}"


def markdown(rows: dict[tuple, list[tuple[float, float]]], seeds: list[int]) -> str:
    """One line per (baseline, φ, method): base and new as seed mean ± std, HM of the means."""
    from ..report.logs import harmonic_mean

    lines = [f"| baseline | φ | method | base | new | HM |", "|---|---:|---|---:|---:|---:|"]
    for (baseline, size, method), values in rows.items():
        base, new = [b for b, _ in values], [n for _, n in values]
        hm = harmonic_mean(statistics.mean(base), statistics.mean(new))
        lines.append(f"| {baseline} | {size} | {method} | {_mean_std(base)} | {_mean_std(new)} | {hm:.2f} |")
    return "\n".join(lines) + f"\n\nSeeds {', '.join(map(str, seeds))}; mean ± std over seeds (population); HM of the means."


def paired_markdown(rows: dict[tuple, list[tuple[float, float]]], seeds: list[int]) -> str:
    """Per baseline, φ and LOREAL run (the method, each ablation and diagnostic): +LOREAL − β seed by seed
    (same seed: same split, same α and β), base, new and the HM of each seed's pair; their mean ± std and
    how many seeds the run improves the HM of."""
    from ..report.logs import harmonic_mean

    lines = ["| baseline | φ | run | Δ HM per seed | Δ base | Δ new | Δ HM | seeds improved (HM) |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    for (baseline, size, method), loreal in rows.items():
        beta = rows.get((baseline, size, "β (trained at φ)"))
        if not method.startswith("+LOREAL") or not beta:
            continue
        pairs = list(zip(loreal, beta))  # seed order in both
        d_base = [lo[0] - be[0] for lo, be in pairs]
        d_new = [lo[1] - be[1] for lo, be in pairs]
        d_hm = [harmonic_mean(*lo) - harmonic_mean(*be) for lo, be in pairs]
        per_seed = ", ".join(f"{seed}: {d:+.2f}" for seed, d in zip(seeds, d_hm))
        lines.append(f"| {baseline} | {size} | {method} | {per_seed} | {_mean_std(d_base)} | {_mean_std(d_new)} | "
                     f"{_mean_std(d_hm)} | {sum(d > 0 for d in d_hm)} of {len(d_hm)} |")
    return "\n".join(lines) + "\n\nEach LOREAL run − β on the same seed; mean ± std over seeds (population)."


#: Training scalars of a LOREAL run that say what its loss terms did (Dassl writes each step's running mean
#: over the epoch under ``train/<name>``); ``acc_alpha`` is the teacher's training accuracy.
TERMS = ("ce", "hld", "lld", "acc", "acc_alpha")


def loss_terms(run_dir: str | Path) -> dict[str, tuple[float, float]]:
    """``{term: (first step, mean of the last epoch)}`` from a run's TensorBoard file (terms it has)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"))
    events.Reload()
    tags = set(events.Tags().get("scalars", ()))
    return {term: (values[0].value, values[-1].value) for term in TERMS if f"train/{term}" in tags
            for values in [events.Scalars(f"train/{term}")]}


def terms_markdown(terms: dict[tuple, list[dict[str, tuple[float, float]]]], seeds: list[int]) -> str:
    """One line per LOREAL run kind: every term's first step → last epoch, seed means."""
    lines = ["| baseline | φ | run | " + " | ".join(TERMS) + " |", "|---|---:|---|" + "---:|" * len(TERMS)]
    for (baseline, size, run), per_seed in terms.items():
        cells = []
        for term in TERMS:
            pairs = [t[term] for t in per_seed if term in t]
            if not pairs:
                cells.append("—")
                continue
            cell = f"{statistics.mean(p[0] for p in pairs):.2f} → {statistics.mean(p[1] for p in pairs):.2f}"
            if len(pairs) < len(per_seed):  # a term the runs of some seeds did not log
                cell += f" ({len(pairs)} of {len(per_seed)} seeds)"
            cells.append(cell)
        lines.append(f"| {baseline} | {size} | {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nStage-3 training scalars (TensorBoard `train/<term>`), first step → mean of the "
                               f"last epoch, mean over seeds {', '.join(map(str, seeds))}; acc is β's training "
                               f"accuracy, acc_alpha the teacher's (α on the standard view).")


def bench_gates(out: Path, backbone: str, baselines: list[str], sizes: list[int], seeds: list[int],
                standard: int, run: bool = False, jobs: int = 1, log: Callable[[str], None] = print) -> list:
    """The baseline gates from a folder's α, β and doubled-epoch β runs (a `loreal world bench --out` folder, or
    one ``run`` fills with those stages only: the gates come before any LOREAL run)."""
    from ..clip import load_clip
    from ..errors import MissingFileError
    from ..pipeline.local import accuracies, execute_stages
    from ..pipeline.stage import run_state
    from .dataset import write_world_dataset
    from .gates import baseline_gates
    from .stages import WORLD_ENV, gate_stages
    from .zeroshot import split_zero_shot

    out = out.resolve()
    data = out / "data"
    if run:
        write_world_dataset(data)
    if not (data / "loreal_world").is_dir():
        raise MissingFileError(f"{out} holds no world bench (no {data}/loreal_world): run `loreal world check --bench "
                               f"{out} --run` (or `loreal world bench --out {out}`) first, or point --bench at its folder")
    plans = {(b, size, seed): gate_stages(b, size, seed, root=str(data), output=str(out), backbone=backbone,
                                          std_size=standard) for b in baselines for size in sizes for seed in seeds}
    if run:
        execute_stages([s for stages in plans.values() for s in stages], env={**WORLD_ENV}, jobs=jobs,
                       label="world baselines for the gates", log=log)
    zero = split_zero_shot(load_clip(backbone), data / "loreal_world", (standard, *sizes))
    gates = []
    for baseline in baselines:
        for size in sizes:
            runs = [{s.name: s for s in plans[baseline, size, seed]} for seed in seeds]
            accs = [accuracies([r["alpha"], r["beta"]]) for r in runs]
            doubled = [r["beta_2x"] for r in runs]
            beta_2x = [accuracies([s])["beta_2x"] for s in doubled] if all(
                run_state(s.output_dir) == "done" for s in doubled) else []
            gates += baseline_gates(baseline, size, standard, [a["beta"] for a in accs], [a["alpha"] for a in accs],
                                    zero, beta_2x)
    return gates


def run_bench(baselines: list[str], sizes: list[int], seeds: list[int], ablation: str, out: Path,
              log: Callable[[str], None] = print, jobs: int = 1, check_gates: bool = True,
              diagnose: str = "") -> dict:
    """Run (or resume) the bench; ``jobs`` stages side by side. The table is rewritten after every seed.
    ``ablation`` and ``diagnose`` name the baseline of the Table 6 ablations and of the ``diagnostics``
    preset's variants ("" for none), both at the first φ.

    First the premise's gates, on the CLIP and on the baselines' α, β and doubled-epoch β runs (which the bench
    reuses): if one fails, no LOREAL stage runs (``check_gates=False`` benches such a world anyway)."""
    from ..clip import load_clip
    from ..pipeline.local import accuracies, check_jobs, execute_stages
    from .stages import WORLD_ENV, world_stages

    check_jobs(jobs)
    from .budget import check_budgets
    from .dataset import write_world_dataset
    from .pretrain import PretrainSettings, pretrained_clip
    from .zeroshot import split_zero_shot

    for row in check_budgets(baselines):  # fair: +LOREAL never compared with a β that trained longer
        log(f"{row.baseline}: β and +LOREAL take {row.beta_steps} and {row.loreal_steps} optimiser steps")
    settings = PretrainSettings()
    std = settings.image_size
    backbone = str(pretrained_clip(settings, sizes=tuple(sizes), log=log))
    out = out.resolve()
    folder = write_world_dataset(out / "data")
    common = dict(root=str(out / "data"), output=str(out), backbone=backbone, std_size=std)
    env = {**WORLD_ENV, "LOREAL_CACHE": str(out / "embedding_cache")}
    rows: dict[tuple, list[tuple[float, float]]] = {}
    if check_gates:
        from ..attributes import load_bank
        from ..errors import LorealError
        from .gates import clip_gates, format_gates

        gates = clip_gates(load_clip(backbone), std, sizes, load_bank("loreal_world").attributes)
        gates += bench_gates(out, backbone, baselines, sizes, seeds, std, run=True, jobs=jobs, log=log)
        log(format_gates(gates))
        failed = [g.name for g in gates if not g.passed]
        if failed:
            raise LorealError(f"the world fails {len(failed)} gate(s) of the premise ({'; '.join(failed)}): no LOREAL "
                              f"stage runs on it, since its results would say nothing about the method. Calibrate "
                              f"the world (`loreal world check`), or pass --skip-gates to bench it anyway")
    zero = split_zero_shot(load_clip(backbone), folder, (std, *sizes))
    for size in sizes:
        for view in (std, size):
            rows[("CLIP", size, f"zero-shot at {view}")] = [(zero[view]["base"], zero[view]["new"])]
    terms: dict[tuple, list[dict[str, tuple[float, float]]]] = {}
    seconds = 0.0
    # (baseline, φ, LOREAL config, run): the method everywhere, the ablations and diagnostics at the first φ.
    plans = [(b, size, "world", "+LOREAL") for b in baselines for size in sizes]
    for kind, baseline, variants in (("ablation", ablation, ABLATIONS), ("diagnostic", diagnose, diagnostics())):
        if baseline:
            plans += [(baseline, sizes[0], variant_config(baseline, name, out / "configs", keys),
                       f"+LOREAL, {kind} {name}") for name, keys in variants.items()]
    # Seed by seed, so an interrupted bench already has every baseline for the first seeds.
    for done, seed in enumerate(seeds, start=1):
        pipelines = [(baseline, size, lcfg, run, world_stages(baseline, size, seed, loreal_config=lcfg, **common))
                     for baseline, size, lcfg, run in plans]
        log(f"== seed {seed}: {len(plans)} pipelines ({', '.join(f'{p[0]} {p[3]} φ {p[1]}' for p in plans)})")
        start = time.perf_counter()
        execute_stages([s for p in pipelines for s in p[4]], env=env, log=log, jobs=jobs, label=f"world bench, seed {seed}")
        seconds += time.perf_counter() - start
        for baseline, size, lcfg, run, stages in pipelines:
            acc = accuracies(stages)
            terms.setdefault((baseline, size, run), []).append(
                loss_terms(next(s.output_dir for s in stages if s.name == "loreal")))
            if lcfg == "world":
                rows.setdefault((baseline, size, f"α (trained at {std}) at {std}"), []).append(
                    (acc["alpha"], acc["alpha_std_new"]))
                rows.setdefault((baseline, size, f"α (trained at {std}) at {size}"), []).append(
                    (acc["alpha_base"], acc["alpha_new"]))
                rows.setdefault((baseline, size, "β (trained at φ)"), []).append((acc["beta"], acc["beta_new"]))
                rows.setdefault((baseline, size, "+LOREAL"), []).append((acc["loreal"], acc["loreal_new"]))
            else:
                rows.setdefault((baseline, size, run), []).append((acc["loreal"], acc["loreal_new"]))
        # The table so far: an interrupted bench still leaves the finished seeds' results.
        text = "\n\n".join([markdown(rows, seeds[:done]), paired_markdown(rows, seeds[:done]),
                             terms_markdown(terms, seeds[:done])])
        (out / "world_bench.md").write_text(text + "\n")
    return {"backbone": backbone, "seeds": seeds, "sizes": sizes, "std_size": std, "seconds": round(seconds, 1),
            "rows": {" | ".join(map(str, k)): v for k, v in rows.items()},
            "terms": {" | ".join(map(str, k)): v for k, v in terms.items()}, "markdown": text}

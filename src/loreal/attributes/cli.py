"""``loreal attributes mine|show``: mine a bank with an LLM, or print one.

The top-level ``loreal`` command calls ``add_parser``; ``python -m loreal.attributes.cli`` runs the
same sub-commands on their own. Handlers print (the library only logs) and return an exit code:
0 on success, 1 on a LOREAL error (its message says what to fix).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..data.catalog import DATASETS, dataset_info
from ..errors import ConfigError, LorealError, MissingFileError
from .bank import AttributeBank, load_bank, shipped_banks
from .miner import DEFAULT_BATCH_SIZE, mine_attributes


def read_classnames_file(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class-name file {path} does not exist (expected one class name per line)")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_dataset_classnames(dataset: str, root: str | Path) -> list[str]:
    """Class names of a catalog dataset under ``root``, in label order.

    Read from the split JSON (entries ``[relative_path, label, classname]``); ImageNet, which has
    none, from ``classnames.txt`` (``<wnid> <name>`` per line, as CoOp ships it); FGVC-Aircraft
    from ``variants.txt``.

    Raises:
        ConfigError: Unknown dataset, or one without class names on disk (the ImageNet variants).
        MissingFileError: The split or class-name file is not under ``root``.
    """
    info = dataset_info(dataset)
    folder = Path(root) / info.folder
    if info.split_file is not None:
        return _classnames_from_split(folder / info.split_file)
    if info.key == "imagenet":
        path = folder / "classnames.txt"
        _require(path, "CoOp's classnames.txt")
        rows = [line.strip().split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines()]
        return [row[1].strip() for row in rows if len(row) == 2]
    if info.key == "fgvc_aircraft":
        path = folder / "variants.txt"
        _require(path, "the FGVC-Aircraft variants.txt")
        return read_classnames_file(path)
    raise ConfigError(f"{info.key} has no class list of its own: its bank is {info.attribute_bank!r}; "
                      f"mine --dataset {info.attribute_bank} instead, or pass --classnames FILE")


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: --root must hold {what} at this path "
                               f"(or pass --classnames FILE)")


def _classnames_from_split(path: Path) -> list[str]:
    _require(path, "the dataset's split JSON")
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
        by_label = {int(label): str(name) for entries in splits.values()
                    for _, label, name in entries}
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as err:
        raise ConfigError(f"split file {path} is malformed: expected {{split: [[path, label, "
                          f"classname], ...]}} ({err})") from err
    return [by_label[label] for label in sorted(by_label)]


def _describe(bank: AttributeBank) -> str:
    slots = " ".join(f"S{i} {a}" for i, a in enumerate(bank.attributes, 1))
    why = dict(bank.rationale or {})
    lines = [f"bank:       {bank.path}", f"dataset:    {bank.dataset}", f"K:          {bank.k}",
             *(f"  A{i}: {a}" + (f"  ({why[a]})" if a in why else "") for i, a in enumerate(bank.attributes, 1)),
             f"prompt:     <ctx> [CLS] with {slots}.", f"method:     {bank.method}",
             f"source:     {bank.source}", f"created:    {bank.created}"]
    if bank.model:
        lines.append(f"model:      {bank.model} at {bank.endpoint}")
    if bank.descriptions:
        lines.append(f"step 1:     {len(bank.descriptions)} class descriptions")
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    """Print one bank (by name, dataset or path), or list the shipped banks."""
    try:
        if args.bank is None:
            for name, path in shipped_banks().items():
                bank = load_bank(path)
                print(f"{name:15s} K={bank.k}  {', '.join(bank.attributes)}")
            return 0
        bank = load_bank(args.bank)
    except LorealError as err:
        print(f"loreal attributes show: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(bank.to_dict(), indent=2, ensure_ascii=False) if args.json else _describe(bank))
    return 0


def run_mine(args: argparse.Namespace) -> int:
    """Mine a bank for ``--dataset`` and write it to ``--out``."""
    if not logging.getLogger().handlers:  # progress and retries, when run without the top-level CLI
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        dataset = args.dataset
        if args.classnames:
            names = read_classnames_file(args.classnames)
            if dataset in DATASETS or any(d.dassl_name == dataset for d in DATASETS.values()):
                dataset = dataset_info(dataset).key
        else:
            dataset = dataset_info(dataset).key
            names = read_dataset_classnames(dataset, args.root)
        bank = mine_attributes(
            names, dataset, args.model, args.k, args.out, base_url=args.base_url,
            batch_size=args.batch_size, cache_path=args.cache, max_retries=args.max_retries,
            max_repairs=args.max_repairs, timeout=args.timeout, temperature=args.temperature,
            api_key_env=args.api_key_env, force=args.force)
    except LorealError as err:
        print(f"loreal attributes mine: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {bank.path}: K={bank.k} ({', '.join(bank.attributes)}) from {len(names)} classes")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``attributes`` with its sub-commands ``mine`` and ``show`` to ``subparsers``."""
    parser = subparsers.add_parser("attributes", help="mine or show resolution-robust attribute banks",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="attributes_command", required=True)

    mine = sub.add_parser("mine", help="mine K attributes for a dataset with an LLM (two steps)")
    mine.add_argument("--dataset", required=True,
                      help="dataset key or Dassl name (oxford_pets, OxfordPets); with --classnames any name")
    names = mine.add_mutually_exclusive_group(required=True)
    names.add_argument("--classnames", metavar="FILE", help="text file, one class name per line")
    names.add_argument("--root", metavar="DATA", help="dataset root; class names come from the split JSON")
    mine.add_argument("--model", required=True, help="chat model name, e.g. gpt-4o")
    mine.add_argument("--base-url", metavar="URL",
                      help="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); default: OpenAI")
    mine.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                      help="environment variable holding the API key (never printed or stored)")
    mine.add_argument("--k", type=int, default=5, help="number of attributes (default 5, as the paper)")
    mine.add_argument("--out", required=True, metavar="FILE", help="bank to write (JSON)")
    mine.add_argument("--force", action="store_true", help="replace an existing bank at --out")
    mine.add_argument("--cache", metavar="FILE", help="step-1 cache (default: <out>.step1.jsonl)")
    mine.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                      help=f"classes per step-1 request (default {DEFAULT_BATCH_SIZE})")
    mine.add_argument("--max-retries", type=int, default=6, help="retries on 429/5xx/timeouts (default 6)")
    mine.add_argument("--max-repairs", type=int, default=2,
                      help="times a malformed answer is sent back to be fixed (default 2)")
    mine.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    mine.add_argument("--temperature", type=float, default=None,
                      help="sampling temperature (default: the model's)")
    mine.set_defaults(func=run_mine)

    show = sub.add_parser("show", help="print a bank; without an argument, list the shipped banks")
    show.add_argument("bank", nargs="?", metavar="DATASET",
                      help="bank name, dataset key, Dassl dataset name or path to a JSON bank")
    show.add_argument("--json", action="store_true", help="print the bank's JSON")
    show.set_defaults(func=run_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``attributes`` sub-commands without the top-level CLI (``python -m loreal.attributes.cli``)."""
    parser = argparse.ArgumentParser(prog="loreal")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "attributes":  # accept both `... cli mine` and `... cli attributes mine`
        argv.insert(0, "attributes")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

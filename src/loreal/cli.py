"""The ``loreal`` command. Each area adds its sub-commands through an ``add_parser`` function."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler (peak memory on CPU) is chatty otherwise

# (command, help, modules whose add_parser(subparsers) add its sub-commands)
COMMANDS = [
    ("bench", "benchmarks (tables, or JSON with --json)", ["loreal.bench.resolution", "loreal.bench.text", "loreal.bench.efficiency",
              "loreal.bench.memory"]),
    ("pipeline", "the low-resolution benchmark pipelines (stages of train.py runs), from any folder", ["loreal.pipeline.cli"]),
]
# Single-level commands: module whose add_parser(subparsers) adds the command itself.
TOP_LEVEL: list[str] = ["loreal.demo", "loreal.attributes.cli", "loreal.results", "loreal.reproduce.cli", "loreal.world.cli",
                        "loreal.attention", "loreal.doctor.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loreal", description="LOREAL: low-resolution robust CLIP prompt learning")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, modules in COMMANDS:
        group = sub.add_parser(name, help=help_text).add_subparsers(dest="subcommand", required=True)
        for module in modules:
            importlib.import_module(module).add_parser(group)
    for module in TOP_LEVEL:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # our errors derive from these and name the fix
        from .errors import LorealError

        if not isinstance(exc, LorealError):
            raise
        print(f"loreal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``micar`` command. Each subcommand lives in ``micar/commands/<name>.py`` and exposes
``register(subparsers)`` (adds its parser, sets ``func``); heavy imports stay inside ``func`` so
``micar --help`` is fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from micar.config import ConfigError

# Subcommand modules, in the order `micar --help` lists them.
COMMANDS = [
    "demo",
    "phantom",
    "prepare",
    "train",
    "evaluate",
    "generate",
    "score",
    "tune",
    "report",
    "import_reference",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="micar",
        description="MicarVLMoE experiment platform: prepare data, train, evaluate, generate, score.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"micar.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"micar.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        # User-fixable problems: one clear line, no traceback (use -v for one).
        if args.verbose:
            raise
        print(f"micar {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``micar import-reference``: a published snapshot + vocabulary -> a native checkpoint."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-reference",
        help="convert a published MicarVLMoE snapshot into a native checkpoint",
        description=(
            "Read the authors' model_snapshot.pth (weights only) with token2id.json / id2token.json, "
            "build the preset's model and write a native checkpoint directory."
        ),
    )
    parser.add_argument("--snapshot", required=True, help="published model_snapshot.pth")
    parser.add_argument("--token2id", required=True, help="published token2id.json")
    parser.add_argument("--id2token", required=True, help="published id2token.json")
    parser.add_argument("--preset", default="covctr", help="tune_configs/<preset>.yaml (default covctr)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from micar.checkpoint import save_checkpoint
    from micar.config import parse_override
    from micar.reference import import_reference

    overrides = dict(parse_override(item) for item in args.overrides)
    model, tokenizer, cfg = import_reference(
        args.snapshot, args.token2id, args.id2token, overrides, preset=args.preset
    )
    out = save_checkpoint(args.out, model, tokenizer, cfg)
    log.info("imported %s (preset %s) into %s", args.snapshot, args.preset, out)
    return 0

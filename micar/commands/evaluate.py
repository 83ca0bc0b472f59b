"""``micar evaluate --checkpoint DIR``: decode a split with a checkpoint and score it."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="decode a split with a checkpoint; write gen_reports.csv and scores.json",
        description=(
            "Decode every row of a prepared split with a native checkpoint and score the reports. "
            "Writes <out>/gen_reports.csv (id, actual_report, generated_report) and <out>/scores.json."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="native checkpoint directory (e.g. runs/NAME/best)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--prepared", default=None, help="prepared directory (default: the checkpoint config's)")
    p.add_argument(
        "--out", default=None, help="output directory (default: <checkpoint>/../eval-<name>-<split>)"
    )
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the config's eval.beam_size)")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument(
        "--references",
        choices=("text", "reference"),
        default=None,
        help="text: cleaned reports; reference: label ids decoded back, as published (default: config)",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-rows", type=int, default=0, help="decode only the first N rows (0 = all)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    prepared: str | Path | None = None,
    out: str | Path | None = None,
    beam: int | None = None,
    length_penalty: float | None = None,
    references: str | None = None,
    batch_size: int | None = None,
    max_rows: int = 0,
    device: str | None = None,
) -> dict:
    """Decode ``split`` with ``checkpoint``; write gen_reports.csv + scores.json; return the scores record."""
    import torch

    from micar.checkpoint import load_checkpoint
    from micar.data.dataset import iter_local_batches, load_manifest
    from micar.evaluation import score
    from micar.evaluation.decode import decode_split, scores_record, write_reports_csv, write_scores_json

    checkpoint = Path(checkpoint)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, cfg = load_checkpoint(checkpoint, map_location=dev)
    prepared = Path(prepared or cfg.data.prepared_dir)
    manifest = load_manifest(prepared)
    ec = cfg.eval
    mode = references or ec.references
    beam = beam or ec.beam_size
    batches = iter_local_batches(
        manifest.path,
        split,
        batch_size=batch_size or ec.batch_size,
        text_seq_len=cfg.model.text_seq_len,
        image_size=manifest.image_size,
        max_rows=max_rows,
        tokenizer_path=checkpoint,
    )
    decoded = decode_split(
        model,
        batches,
        tokenizer,
        device=dev,
        max_len=ec.max_len or cfg.model.text_seq_len - 1,
        beam_size=beam,
        length_penalty=ec.length_penalty if length_penalty is None else length_penalty,
        references=mode,
    )
    scores = score(decoded.generated, [[r] for r in decoded.references])
    out = Path(out) if out else checkpoint.resolve().parent / f"eval-{checkpoint.resolve().name}-{split}"
    write_reports_csv(out / "gen_reports.csv", decoded)
    record = scores_record(
        scores,
        references=mode,
        split=split,
        rows=len(decoded),
        checkpoint=str(checkpoint.resolve()),
        prepared_dir=str(manifest.path),
        beam_size=beam,
    )
    write_scores_json(out / "scores.json", record)
    log.info("wrote %s and %s", out / "gen_reports.csv", out / "scores.json")
    return {**record, "out": str(out)}


def run(args: argparse.Namespace) -> int:
    record = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        prepared=args.prepared,
        out=args.out,
        beam=args.beam,
        length_penalty=args.length_penalty,
        references=args.references,
        batch_size=args.batch_size,
        max_rows=args.max_rows,
        device=args.device,
    )
    print(json.dumps(record, indent=2))
    return 0

"""``micar score REPORTS.csv``: score any generated-reports CSV with the metric suite."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a generated-reports CSV (BLEU-1..4, METEOR, ROUGE-L, CIDEr)",
        description=(
            "Score the predictions of a CSV (this project's or the published code's gen_reports.csv) "
            "against one or more reference columns with pycocoevalcap; prints JSON."
        ),
    )
    p.add_argument("csv", help="CSV with a prediction column and reference column(s)")
    p.add_argument(
        "--pred-col", default="generated_report", help="prediction column (default generated_report)"
    )
    p.add_argument(
        "--ref-col",
        action="append",
        default=None,
        help="reference column; repeat for several references per row (default actual_report)",
    )
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.set_defaults(func=run)


def read_columns(path: Path, pred_col: str, ref_cols: list[str]) -> tuple[list[str], list[list[str]]]:
    """Predictions and per-row reference lists from a CSV; a missing column is a clear error."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    # Empty cells are empty reports, not NaN.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in [pred_col, *ref_cols] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; it has "
            f"{', '.join(repr(c) for c in frame.columns)} (choose with --pred-col / --ref-col)"
        )
    if frame.empty:
        raise ValueError(f"{path}: no rows to score")
    preds = frame[pred_col].tolist()
    refs = [list(row) for row in zip(*(frame[c].tolist() for c in ref_cols))]
    return preds, refs


def run(args: argparse.Namespace) -> int:
    from micar.evaluation import json_safe, monitored_score, score

    path = Path(args.csv)
    ref_cols = args.ref_col or ["actual_report"]
    preds, refs = read_columns(path, args.pred_col, ref_cols)
    scores = score(preds, refs)
    record = {
        **json_safe(scores),
        "monitored": monitored_score(scores),
        "rows": len(preds),
        "csv": str(path),
        "pred_col": args.pred_col,
        "ref_cols": ref_cols,
    }
    text = json.dumps(record, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0

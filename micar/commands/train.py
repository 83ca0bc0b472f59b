"""``micar train --config YAML [key.sub=value ...]``: train (or resume) a run on Ray Train."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train MicarVLMoE on a prepared data set (Ray Train, MLflow)",
        description=(
            "Train on Ray Train with the config's recipe; validate each eval.val_interval epochs, keep the "
            "best checkpoint, stop early after train.patience validations without improvement and test "
            "with the best weights. Starting the same --run-name again resumes the run from its last "
            "checkpoint. Writes <train.output_dir>/<run name>/{best,last,gen_reports.csv,scores.json,...} "
            "and one MLflow run."
        ),
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. tune_configs/demo.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 model.moe.k=1")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (train.workers)")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (train.use_gpu=true)")
    p.add_argument("--run-name", default=None, help="run name (train.run_name); the same name resumes")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from micar.config import load_config
    from micar.training import train

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"train.workers={args.workers}")
    if args.gpu:
        overrides.append("train.use_gpu=true")
    if args.run_name:
        overrides.append(f"train.run_name={args.run_name}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, address=args.address)
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
                "gen_reports": str(result.gen_reports) if result.gen_reports else None,
                "mlflow_run_id": result.mlflow_run_id,
                "tracking_uri": result.tracking_uri,
                "test_scores": result.test_scores,
            },
            indent=2,
        )
    )
    return 0

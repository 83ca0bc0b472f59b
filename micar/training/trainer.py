"""The training driver: one call that runs a whole training run on Ray Train and returns where
everything landed.

``train(cfg)`` reads the prepared directory's manifest and tokenizer, opens (or reopens) the
run's MLflow run, builds Ray Data datasets of the splits and runs a ``TorchTrainer`` of
``train.workers`` workers (CPU, or one GPU each with ``train.use_gpu``) with
``RunConfig(storage_path=<abs train.output_dir>, name=<run name>)``. Ray Train V2 restores a
run from the checkpoint snapshot in that directory, so starting the same run name again
resumes it; ``FailureConfig(max_failures=train.max_failures)`` restarts crashed worker groups
from the last checkpoint. Ray is joined at ``address`` / ``$RAY_ADDRESS`` or started locally.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micar.config import MicarConfig, flatten, replace, to_dict

logger = logging.getLogger(__name__)

FAIL_AT_EPOCH_ENV = "MICAR_FAIL_AT_EPOCH"


@dataclass
class TrainResult:
    """Where a finished training run put its outputs."""

    run_name: str
    run_dir: Path
    best_checkpoint: Path | None  # native checkpoint dir (micar.checkpoint.load_checkpoint)
    last_checkpoint: Path | None
    test_scores: dict[str, Any] | None  # scores.json: metrics, monitored, references, split, ...
    gen_reports: Path | None  # gen_reports.csv of the test split
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch metrics
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    config: MicarConfig | None = None


def resolve_config(cfg: MicarConfig, *, run_name: str | None = None) -> tuple[MicarConfig, Any]:
    """Fill in what the prepared directory decides (vocab size, image size) and the run name."""
    from micar.data.dataset import load_manifest, tokenizer_dir
    from micar.text.tokenizer import load_tokenizer

    manifest = load_manifest(cfg.data.prepared_dir)
    tokenizer = load_tokenizer(tokenizer_dir(manifest.path))
    vocab = len(tokenizer.get_vocab())
    if cfg.model.vocab_size and cfg.model.vocab_size != vocab:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} but the tokenizer of {manifest.path} has {vocab} tokens "
            "(leave model.vocab_size at 0 to take it from the tokenizer)"
        )
    updates: dict[str, Any] = {"model.vocab_size": vocab, "data.prepared_dir": str(manifest.path)}
    if manifest.image_size != cfg.data.image_size:
        logger.warning(
            "%s was prepared at image size %d but data.image_size is %d: training on the prepared %d",
            manifest.path,
            manifest.image_size,
            cfg.data.image_size,
            manifest.image_size,
        )
        updates["data.image_size"] = manifest.image_size
    resize = manifest.raw.get("resize_size")
    if isinstance(resize, int) and resize != cfg.data.resize_size:
        # Recorded so that `micar generate` prepares image files the way the shards were.
        updates["data.resize_size"] = resize
    if manifest.dataset != cfg.data.dataset:
        logger.warning(
            "data.dataset is %r but %s holds %r; recording %r",
            cfg.data.dataset,
            manifest.path,
            manifest.dataset,
            manifest.dataset,
        )
        updates["data.dataset"] = manifest.dataset
    name = run_name or cfg.train.run_name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    updates["train.run_name"] = name
    updates["train.output_dir"] = str(Path(cfg.train.output_dir).expanduser().resolve())
    return replace(cfg, updates), manifest


def train(
    cfg: MicarConfig,
    *,
    run_name: str | None = None,
    address: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run (or resume) one training run and return its outputs.

    ``run_name`` (else ``train.run_name``, else ``<preset>-<timestamp>``) names the run directory
    ``<train.output_dir>/<run_name>``; a second call with the same name resumes it.
    ``parent_run_id`` nests the MLflow run (sweeps); ``callbacks`` go to Ray Train's RunConfig.
    """
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from micar.data.dataset import ray_split, tokenizer_dir
    from micar.ray_session import ensure_ray
    from micar.tracking import RunTracker, git_commit, resolve_tracking_uri
    from micar.training.worker import train_loop_per_worker

    cfg, manifest = resolve_config(cfg, run_name=run_name)
    tc = cfg.train
    run_dir = Path(tc.output_dir) / tc.run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    tracker = None
    if cfg.tracking.enabled:
        uri = resolve_tracking_uri(cfg.tracking.uri)
        all_tags = {
            "dataset": manifest.dataset,
            "preset": cfg.preset,
            "references": cfg.eval.references,
            "run_dir": str(run_dir),
            "git_commit": git_commit(Path(__file__).parent) or "unknown",
            **(tags or {}),
        }
        tracker, resumed = RunTracker.start(
            uri=uri,
            experiment=cfg.tracking.experiment,
            run_name=tc.run_name,
            run_dir=run_dir,
            tags=all_tags,
            parent_run_id=parent_run_id,
        )
        tracker.log_params(flatten(cfg))
        if resumed:
            tracker.set_tags({"resumed": "true"})

    ensure_ray(address, min_cpus=tc.workers * tc.cpus_per_worker + 2)
    from ray.data import DataContext

    # Per-operator progress bars from every epoch's re-execution drown the per-epoch log lines.
    DataContext.get_current().enable_progress_bars = False
    split_kw = dict(
        text_seq_len=cfg.model.text_seq_len, image_size=manifest.image_size, max_rows=cfg.data.max_rows
    )
    datasets = {
        "train": ray_split(manifest.path, "train", **split_kw),
        "val": ray_split(manifest.path, "val", keep_text=True, **split_kw),
        "test": ray_split(manifest.path, "test", keep_text=True, **split_kw),
    }
    loop_config = {
        "config": to_dict(cfg),
        "run_dir": str(run_dir),
        "tokenizer_dir": str(tokenizer_dir(manifest.path)),
        "tracking_uri": tracker.uri if tracker else None,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "fail_at_epoch": int(os.environ.get(FAIL_AT_EPOCH_ENV, "0") or 0),
    }
    resources = {"CPU": tc.cpus_per_worker}
    if tc.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.workers, use_gpu=tc.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=tc.run_name,
            storage_path=tc.output_dir,
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
        # Only train is split across workers; rank 0 reads val/test whole. Ordered execution
        # keeps the data order (and so a 1-worker CPU run) reproducible.
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    logger.info(
        "training %s: %d %s worker(s), run dir %s",
        tc.run_name,
        tc.workers,
        "GPU" if tc.use_gpu else "CPU",
        run_dir,
    )
    try:
        trainer.fit()
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.finish("KILLED")
        raise
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    if tracker is not None:
        tracker.finish("FINISHED")
    return collect_result(run_dir, cfg, tracker)


def collect_result(run_dir: Path, cfg: MicarConfig | None = None, tracker: Any = None) -> TrainResult:
    """A ``TrainResult`` from what a run left in ``run_dir``."""
    scores_path = run_dir / "scores.json"
    history_path = run_dir / "history.json"
    record = {}
    record_path = run_dir / "mlflow_run.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
    return TrainResult(
        run_name=run_dir.name,
        run_dir=run_dir,
        best_checkpoint=(run_dir / "best") if (run_dir / "best").is_dir() else None,
        last_checkpoint=(run_dir / "last") if (run_dir / "last").is_dir() else None,
        test_scores=json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else None,
        gen_reports=(run_dir / "gen_reports.csv") if (run_dir / "gen_reports.csv").is_file() else None,
        history=json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else [],
        mlflow_run_id=getattr(tracker, "run_id", None) or record.get("run_id"),
        tracking_uri=getattr(tracker, "uri", None) or record.get("tracking_uri"),
        config=cfg,
    )


__all__ = ["FAIL_AT_EPOCH_ENV", "TrainResult", "collect_result", "resolve_config", "train"]

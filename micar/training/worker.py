"""The function every Ray Train worker runs (``TorchTrainer(train_loop_per_worker=...)``).

Per epoch: train on this worker's shard of the ``train`` dataset (DDP), step the LR schedule,
then on rank 0 validate (val loss + decoding + scores), decide best / early stopping, save the
``best`` and ``last`` native checkpoints into the run directory and report a Ray Train
checkpoint (``last/``, ``best/`` and ``state/``: optimizer, scheduler and counters in
safetensors + JSON). Every rank restores that checkpoint when Ray Train restarts the group
after a failure or when the same run name is started again. At the end rank 0 decodes the
test split with the best weights and writes ``gen_reports.csv`` and ``scores.json``.

Test hook: ``fail_at_epoch`` (the driver fills it from ``$MICAR_FAIL_AT_EPOCH``) makes rank 0
raise once, after the first batch of that epoch, to exercise failure recovery.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from micar.config import config_from_dict, dump_config
from micar.evaluation.decode import scores_record, write_reports_csv, write_scores_json
from micar.evaluation.metrics import METRIC_KEYS, monitored_score, score
from micar.training.distributed import setup_worker_logging
from micar.training.loop import epoch_seed, seed_everything, train_one_epoch, unwrap, validate
from micar.training.optim import build_optimizer, build_scheduler
from micar.training.state import TrainState, load_train_state, save_train_state

logger = logging.getLogger(__name__)

BEST, LAST, STATE = "best", "last", "state"
HISTORY_FILE = "history.json"


class SplitCache:
    """Rank 0's evaluation batches, kept in memory after the first pass when they are small.

    Re-running the Ray Data pipeline of a small val split every epoch costs seconds of
    scheduling for milliseconds of work; up to ``max_bytes`` of decoded batches are kept.
    """

    def __init__(self, iterator: Any, batch_size: int, max_bytes: int = 1 << 30) -> None:
        self.iterator = iterator
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.batches: list[dict[str, Any]] | None = None

    def __iter__(self):
        if self.batches is not None:
            yield from self.batches
            return
        kept: list[dict[str, Any]] | None = []
        size = 0
        for batch in self.iterator.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            if kept is not None:
                size += sum(getattr(v, "nbytes", 0) for v in batch.values())
                if size <= self.max_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        if kept is not None:
            self.batches = kept


def _load_weights(model: torch.nn.Module, checkpoint_dir: Path) -> None:
    from micar.checkpoint import load_checkpoint

    saved, _, _ = load_checkpoint(checkpoint_dir, map_location="cpu")
    unwrap(model).load_state_dict(saved.state_dict())


def _restore_run_dir(ckpt_dir: Path, run_dir: Path) -> None:
    """Make run_dir/{best,last} those of the restored checkpoint (a crash may have left newer ones)."""
    for name in (BEST, LAST):
        if not (ckpt_dir / name).is_dir():
            continue
        tmp = run_dir / f".{name}.restore"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ckpt_dir / name, tmp)
        shutil.rmtree(run_dir / name, ignore_errors=True)
        tmp.replace(run_dir / name)


def _fail_once(run_dir: Path, epoch: int, fail_at: int) -> bool:
    if not fail_at or epoch != fail_at:
        return False
    marker = run_dir / f".micar_failed_at_epoch_{epoch}"
    if marker.exists():
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` is built by ``micar.training.trainer.train``."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint
    from ray.train.collective import broadcast_from_rank_zero

    from micar.checkpoint import save_checkpoint
    from micar.model import build_model
    from micar.text.tokenizer import load_tokenizer
    from micar.tracking import tracker_for

    setup_worker_logging()
    cfg = config_from_dict(loop_config["config"], "<train loop config>")
    tc = cfg.train
    run_dir = Path(loop_config["run_dir"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        # As many intra-op threads as CPUs reserved: more spin against the other workers.
        torch.set_num_threads(max(1, int(tc.cpus_per_worker)))
    tokenizer = load_tokenizer(loop_config["tokenizer_dir"])

    # Same initial weights on every rank (DDP would broadcast rank 0's anyway).
    seed_everything(tc.seed)
    model = build_model(cfg.model)
    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            _load_weights(model, Path(d) / LAST)
    # The MoE leaves unselected experts (and, in unweighted mode, parts of the router) without
    # gradient in a step; DDP must not wait for them.
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    core = unwrap(model)
    optimizer = build_optimizer(core, tc)
    scheduler = build_scheduler(optimizer, tc)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_train_state(Path(d) / STATE, optimizer, scheduler)
            if rank == 0:
                _restore_run_dir(Path(d), run_dir)
        logger.info(
            "rank %d resumed after epoch %d (best %.4f at epoch %d)",
            rank,
            state.epoch,
            state.best_score,
            state.best_epoch,
        )

    tracker = (
        tracker_for(loop_config.get("tracking_uri"), loop_config.get("mlflow_run_id")) if rank == 0 else None
    )
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
        state.mlflow_run_id = loop_config.get("mlflow_run_id") or state.mlflow_run_id
        _backfill(tracker, state)

    train_shard = ray.train.get_dataset_shard("train")
    val_data = SplitCache(ray.train.get_dataset_shard("val"), cfg.eval.batch_size) if rank == 0 else None
    stop = state.stopped_early
    first = state.epoch + 1
    for epoch in range(first, tc.epochs + 1):
        if stop:
            break
        seed_everything(epoch_seed(tc.seed, epoch, rank))
        batches = train_shard.iter_torch_batches(
            batch_size=tc.batch_size,
            local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
            local_shuffle_seed=epoch_seed(tc.seed, epoch, 0) if cfg.data.shuffle_buffer else None,
        )
        fail = rank == 0 and _fail_once(run_dir, epoch, int(loop_config.get("fail_at_epoch") or 0))
        stats = train_one_epoch(model, batches, optimizer, cfg, device=device, fail_after_first_batch=fail)
        lrs = {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
        scheduler.step()
        state.epoch = epoch
        state.global_step += stats.steps
        metrics: dict[str, float] = {"epoch": epoch, **stats.metrics(), **lrs}

        ckpt_tmp: Path | None = None
        if rank == 0:
            is_val = epoch % cfg.eval.val_interval == 0 or epoch == tc.epochs
            improved = False
            if is_val:
                val_loss, decoded = validate(
                    model,
                    val_data,
                    tokenizer,
                    cfg,
                    device=device,
                    decode_limit=cfg.eval.val_subset,
                )
                scores = score(decoded.generated, [[r] for r in decoded.references])
                monitored = monitored_score(scores)
                metrics.update({"val_loss": val_loss, "val_monitored": monitored})
                metrics.update({f"val_{k}": v for k, v in scores.items()})
                write_reports_csv(run_dir / "val_reports.csv", decoded)
                improved = monitored >= state.best_score
                if improved:
                    state.best_score, state.best_epoch, state.bad_epochs = monitored, epoch, 0
                else:
                    state.bad_epochs += 1
                    if state.bad_epochs >= tc.patience:
                        state.stopped_early = True
                        logger.info(
                            "early stop after epoch %d: no improvement in %d validations",
                            epoch,
                            state.bad_epochs,
                        )
            if state.best_epoch:
                metrics["best_monitored"] = state.best_score
            state.history.append({k: float(v) for k, v in metrics.items()})
            _write_history(run_dir, state)

            save_checkpoint(run_dir / LAST, core, tokenizer, cfg)
            if improved:
                save_checkpoint(run_dir / BEST, core, tokenizer, cfg)
            ckpt_tmp = Path(tempfile.mkdtemp(prefix="micar-ckpt-"))
            shutil.copytree(run_dir / LAST, ckpt_tmp / LAST)
            if (run_dir / BEST).is_dir():
                shutil.copytree(run_dir / BEST, ckpt_tmp / BEST)
            save_train_state(ckpt_tmp / STATE, state, optimizer, scheduler)
            _log_epoch(metrics, epoch, tc.epochs)

        # Ray's report is the per-epoch barrier; only rank 0 carries metrics and the checkpoint.
        ray.train.report(
            metrics if rank == 0 else {},
            checkpoint=Checkpoint.from_directory(str(ckpt_tmp)) if ckpt_tmp is not None else None,
        )
        if rank == 0:
            shutil.rmtree(ckpt_tmp, ignore_errors=True)
            tracker.log_metrics(metrics, step=epoch)
        stop = broadcast_from_rank_zero(state.stopped_early)

    final: dict[str, Any] = {}
    if rank == 0:
        final = _test_and_log(model, core, tokenizer, cfg, run_dir, state, tracker, device)
        tracker.log_artifacts(loop_config["tokenizer_dir"], "tokenizer")
    ray.train.report(final)


def _log_epoch(metrics: dict[str, float], epoch: int, epochs: int) -> None:
    parts = [f"epoch {epoch}/{epochs}", f"loss {metrics['train_loss']:.4f}"]
    if "val_loss" in metrics:
        parts += [
            f"val_loss {metrics['val_loss']:.4f}",
            f"BLEU-4 {metrics['val_BLEU-4']:.4f}",
            f"monitored {metrics['val_monitored']:.4f}",
        ]
    parts += [f"{metrics['samples_per_s']:.1f} samples/s", f"{metrics['epoch_time_s']:.1f}s"]
    logger.info(" | ".join(parts))


def _write_history(run_dir: Path, state: TrainState) -> None:
    import json

    tmp = run_dir / f".{HISTORY_FILE}.tmp"
    tmp.write_text(json.dumps(state.history, indent=1), encoding="utf-8")
    tmp.replace(run_dir / HISTORY_FILE)


def _backfill(tracker: Any, state: TrainState) -> None:
    """Log epochs the checkpoint has but MLflow lacks (a crash between report and logging)."""
    if not state.history:
        return
    logged = tracker.logged_steps("train_loss")
    for row in state.history:
        epoch = int(row["epoch"])
        if epoch not in logged:
            tracker.log_metrics(row, step=epoch)


def _test_and_log(
    model: torch.nn.Module,
    core: torch.nn.Module,
    tokenizer: Any,
    cfg: Any,
    run_dir: Path,
    state: TrainState,
    tracker: Any,
    device: torch.device,
) -> dict[str, Any]:
    """Rank 0: test with the best weights, write gen_reports.csv / scores.json, log artifacts."""
    import ray.train

    from micar.training.plots import plot_expert_usage, plot_learning_curves

    if (run_dir / BEST).is_dir():
        _load_weights(core, run_dir / BEST)
    test_data = ray.train.get_dataset_shard("test")
    test_loss, decoded = validate(
        model,
        test_data.iter_batches(batch_size=cfg.eval.batch_size, batch_format="numpy"),
        tokenizer,
        cfg,
        device=device,
    )
    scores = score(decoded.generated, [[r] for r in decoded.references])
    write_reports_csv(run_dir / "gen_reports.csv", decoded)
    record = scores_record(
        scores,
        references=cfg.eval.references,
        split="test",
        rows=len(decoded),
        test_loss=test_loss,
        best_epoch=state.best_epoch,
        epochs_trained=state.epoch,
        stopped_early=state.stopped_early,
        beam_size=cfg.eval.beam_size,
    )
    write_scores_json(run_dir / "scores.json", record)
    logger.info(
        "test (best epoch %d, %d rows, references=%s): %s",
        state.best_epoch,
        len(decoded),
        cfg.eval.references,
        ", ".join(f"{k} {scores[k]:.4f}" for k in METRIC_KEYS),
    )
    plots = []
    if state.history:
        plots.append(plot_learning_curves(state.history, run_dir / "learning_curves.png"))
        usage = plot_expert_usage(state.history, run_dir / "expert_usage.png")
        if usage is not None:
            plots.append(usage)
    final = {f"test_{k}": v for k, v in scores.items()}
    final.update({"test_monitored": record["monitored"], "test_loss": test_loss, "epoch": state.epoch})
    tracker.log_metrics(final, step=state.epoch)
    tracker.set_tags({"references": cfg.eval.references, "best_epoch": state.best_epoch})
    for name in ("config.yaml", "gen_reports.csv", "scores.json", "val_reports.csv", HISTORY_FILE):
        if (run_dir / name).is_file():
            tracker.log_artifact(run_dir / name)
    for path in plots:
        tracker.log_artifact(path, "plots")
    if (run_dir / BEST).is_dir():
        tracker.log_artifacts(run_dir / BEST, "checkpoint_best")
    return final

"""MLflow tracking for training runs (imported only by training, sweeping and the CLI).

The store is ``tracking.uri`` when set, else ``$MLFLOW_TRACKING_URI``, else a SQLite file
``sqlite:///<abs cwd>/mlflow.db`` (MLflow 3 refuses the old ``./mlruns`` file store). Relative
SQLite paths are made absolute on the driver, because Ray workers run in other directories.
Experiments this module creates on a local SQLite store keep their artifacts next to the
database in ``mlartifacts/``.

One MLflow run per training run: the driver creates it (or finds the one a previous attempt
of the same run left in ``<run_dir>/mlflow_run.json``) and rank 0 logs into it by id through
``RunTracker``, a thin wrapper over ``MlflowClient`` that needs no global active run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run.json"
_BATCH = 100  # MLflow's per-request limit for params / metrics.


def resolve_tracking_uri(uri: str = "") -> str:
    """The tracking URI to use: explicit ``uri`` > ``$MLFLOW_TRACKING_URI`` > ./mlflow.db (absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if not path.startswith("/") and path != ":memory:":
            uri = "sqlite:///" + str(Path(path).resolve())
    elif "://" not in uri and not uri.startswith("databricks"):
        raise ValueError(
            f"tracking URI {uri!r} looks like a plain directory: MLflow 3 refuses the file store. "
            f"Use a database such as sqlite:///{Path(uri).resolve()}/mlflow.db or a server http://host:5000"
        )
    return uri


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (or None outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


class RunTracker:
    """Logs into one existing MLflow run by id (safe to build on any process)."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=uri)

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        run_dir: str | Path,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> tuple[RunTracker, bool]:
        """Create the run of ``run_dir`` or reopen the one recorded there; returns (tracker, resumed)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        record = Path(run_dir) / RUN_ID_FILE
        if record.is_file():
            saved = json.loads(record.read_text(encoding="utf-8"))
            if saved.get("tracking_uri") == uri:
                try:
                    client.get_run(saved["run_id"])
                    tracker = cls(uri, saved["run_id"])
                    client.update_run(tracker.run_id, status="RUNNING")
                    logger.info("resuming MLflow run %s (%s)", tracker.run_id, uri)
                    return tracker, True
                except MlflowException:
                    logger.warning(
                        "MLflow run %s recorded in %s is gone; starting a new one", saved["run_id"], record
                    )
        exp = client.get_experiment_by_name(experiment)
        exp_id = (
            exp.experiment_id
            if exp is not None
            else client.create_experiment(experiment, artifact_location=_artifact_root(uri))
        )
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps({"run_id": run.info.run_id, "tracking_uri": uri, "experiment": experiment}),
            encoding="utf-8",
        )
        logger.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, uri)
        return cls(uri, run.info.run_id), False

    # -- logging ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; on a resumed run, keep the originals and tag any value that changed."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        changed = [
            RunTag(f"config_change.{k}", f"{existing[k]} -> {_param_value(v)}")
            for k, v in params.items()
            if k in existing and existing[k] != _param_value(v)
        ]
        for i in range(0, len(new), _BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + _BATCH])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def logged_steps(self, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


class NullTracker:
    """Stands in for ``RunTracker`` when tracking is disabled (``tracking.enabled: false``)."""

    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def logged_steps(self, key: str) -> set[int]:
        return set()

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


def tracker_for(uri: str | None, run_id: str | None) -> RunTracker | NullTracker:
    """A tracker for a run created elsewhere (``NullTracker`` when there is none)."""
    return RunTracker(uri, run_id) if uri and run_id else NullTracker()

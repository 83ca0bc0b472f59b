"""micar.tracking: URI resolution, run creation / reopening, params on resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from micar.tracking import RunTracker, resolve_tracking_uri


def test_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri() == "http://tracking:5000"
    # An explicit tracking.uri wins; relative SQLite paths become absolute (Ray workers run elsewhere).
    assert resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path.resolve()}/sub/x.db"
    with pytest.raises(ValueError, match="file store"):
        resolve_tracking_uri("./mlruns")


def test_start_resume_and_params(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = tmp_path / "runs" / "r"
    tracker, resumed = RunTracker.start(
        uri=uri, experiment="t", run_name="r", run_dir=run_dir, tags={"preset": "x"}
    )
    assert not resumed
    tracker.log_params({"train.epochs": 2, "model.moe.k": 2})
    tracker.log_metrics({"train_loss": 1.5, "skip": float("nan")}, step=1)
    again, resumed = RunTracker.start(uri=uri, experiment="t", run_name="r", run_dir=run_dir)
    assert resumed and again.run_id == tracker.run_id
    again.log_params({"train.epochs": 3, "model.moe.k": 2})
    run = again.client.get_run(again.run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["config_change.train.epochs"] == "2 -> 3"
    assert run.data.tags["preset"] == "x"
    assert again.logged_steps("train_loss") == {1}
    assert "skip" not in run.data.metrics
    # Artifacts land next to the database, not in some worker's working directory.
    (tmp_path / "a.txt").write_text("x")
    again.log_artifact(tmp_path / "a.txt")
    assert list((tmp_path / "mlartifacts").rglob("a.txt"))
    again.finish()
    assert again.client.get_run(again.run_id).info.status == "FINISHED"

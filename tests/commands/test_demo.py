"""``micar demo`` at reduced size: every step's outputs, the MLflow record, and a skipping re-run."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from micar.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def demo(ray_module, tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["demo", "--workdir", str(work / "w"), "--n", "60", "--layout", "pgross"]
    overrides = ["train.epochs=2", "train.batch_size=8", "eval.batch_size=16"]
    try:
        yield work / "w", uri, args, overrides
    finally:
        mp.undo()


def run_demo(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def first_run(demo):
    _, _, args, overrides = demo
    return run_demo([*args, *overrides])


def test_each_step_writes_its_outputs(demo, first_run):
    workdir, _, _, _ = demo
    rc, out = first_run
    assert rc == 0, out
    meta = json.loads((workdir / "raw" / "phantom.json").read_text())
    assert (meta["layout"], meta["n"]) == ("pgross", 60)
    manifest = json.loads((workdir / "prepared" / "manifest.json").read_text())
    assert sum(manifest["splits"].values()) + sum(manifest["rejects"].values()) == 60
    assert manifest["image_size"] == 64
    run = workdir / "runs" / "demo"
    for name in ("best/model.safetensors", "last/model.safetensors", "gen_reports.csv", "scores.json"):
        assert (run / name).is_file(), name
    scores = json.loads((run / "scores.json").read_text())
    assert scores["references"] == "text" and 0.0 <= scores["BLEU-4"] <= 1.0
    assert scores["epochs_trained"] == 2
    findings = json.loads((run / "finding_scores.json").read_text())
    # The references parse back to exactly the drawn findings: F1 measures what is in the image.
    assert findings["reference_finding_f1"] == pytest.approx(1.0)
    assert 0.0 <= findings["finding_f1"] <= 1.0
    assert sorted(p.name for p in run.glob("*.png")) != []


def test_summary_tells_where_to_look(demo, first_run):
    workdir, uri, _, _ = demo
    _, out = first_run
    for needle in ("BLEU-4", "METEOR", "CIDEr", "finding F1", "reference ", "generated ", "best checkpoint"):
        assert needle in out, needle
    assert f"mlflow ui --backend-store-uri {uri}" in out
    assert out.count("  image      ") == 3


def test_mlflow_holds_the_run(demo, first_run):
    from mlflow.tracking import MlflowClient

    _, uri, _, _ = demo
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("micar")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.mlflow.runName = 'demo'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["model.moe.num_experts"] == "4"
    assert "test_finding_f1" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gen_reports.csv", "scores.json", "finding_scores.json"} <= names


def test_rerun_skips_finished_steps(demo, first_run):
    workdir, _, args, overrides = demo
    before = (workdir / "runs" / "demo" / "scores.json").stat().st_mtime_ns
    rc, out = run_demo([*args, *overrides])
    assert rc == 0
    assert out.count("already") == 3
    assert (workdir / "runs" / "demo" / "scores.json").stat().st_mtime_ns == before

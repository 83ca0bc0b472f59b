"""End to end on a real local Ray: a 2-worker TorchTrainer run that crashes once and recovers,
then a restart of the same run name with one more epoch; MLflow (SQLite under tmp), the
checkpoints and the evaluate / score / generate commands are checked on what those two runs
left. The two trainer runs are shared by every test of this module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from micar.config import flatten, replace

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def runs(ray_module, tiny_prepared_dir: Path, tiny_config, tmp_path_factory):
    from micar.training import train
    from micar.training.trainer import FAIL_AT_EPOCH_ENV

    tmp = tmp_path_factory.mktemp("ray_train")
    cfg = tiny_config(
        tiny_prepared_dir, tmp, train__workers=2, train__epochs=2, train__max_failures=1, eval__val_subset=8
    )
    os.environ[FAIL_AT_EPOCH_ENV] = "2"
    try:
        first = train(cfg, run_name="t")
    finally:
        del os.environ[FAIL_AT_EPOCH_ENV]
    history_after_first = [dict(h) for h in first.history]
    second = train(replace(cfg, {"train.epochs": 3}), run_name="t")
    return {"cfg": cfg, "first": first, "history1": history_after_first, "second": second, "tmp": tmp}


def _client(result):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=result.tracking_uri)


def test_crash_recovers_and_each_epoch_trains_once(runs) -> None:
    first = runs["first"]
    assert (first.run_dir / ".micar_failed_at_epoch_2").exists()  # the hook did fire
    assert [int(h["epoch"]) for h in runs["history1"]] == [1, 2]
    losses = [h["train_loss"] for h in runs["history1"]]
    assert losses[-1] < losses[0], losses
    assert all("val_BLEU-4" in h and "expert_usage/layer0/e0" in h for h in runs["history1"])


def test_restart_with_more_epochs_trains_only_the_new_one(runs) -> None:
    second = runs["second"]
    assert second.run_dir == runs["first"].run_dir
    assert [int(h["epoch"]) for h in second.history] == [1, 2, 3]
    assert second.history[:2] == runs["history1"]
    assert second.mlflow_run_id == runs["first"].mlflow_run_id


def test_checkpoints(runs) -> None:
    from micar.checkpoint import load_checkpoint

    run_dir = runs["second"].run_dir
    for name in ("best", "last"):
        model, tok, cfg = load_checkpoint(run_dir / name)
        assert cfg.model.vocab_size == len(tok.get_vocab()) == model.vocab_size
    ray_ckpts = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert 1 <= len(ray_ckpts) <= 2  # CheckpointConfig(num_to_keep=2)
    state = json.loads((ray_ckpts[-1] / "state" / "train_state.json").read_text())
    assert state["state"]["epoch"] == 3
    assert not [p for p in run_dir.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle")]


def test_mlflow_run(runs) -> None:
    second = runs["second"]
    client = _client(second)
    run = client.get_run(second.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    flat = flatten(runs["cfg"])
    assert params["model.moe.num_experts"] == "4" and set(flat) <= set(params)
    assert params["train.epochs"] == "2" and run.data.tags["config_change.train.epochs"] == "2 -> 3"
    for tag in ("dataset", "preset", "git_commit", "references"):
        assert tag in run.data.tags
    assert run.data.tags["references"] == "text" and run.data.tags["dataset"] == "fixture"
    steps = [m.step for m in client.get_metric_history(second.mlflow_run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3]  # continuous, no epoch logged twice
    for key in (
        "val_loss",
        "val_BLEU-4",
        "lr_rest",
        "samples_per_s",
        "expert_usage/layer0/e1",
        "test_BLEU-4",
    ):
        assert key in run.data.metrics, key
    top = {a.path for a in client.list_artifacts(second.mlflow_run_id)}
    assert {"config.yaml", "gen_reports.csv", "scores.json", "plots", "tokenizer", "checkpoint_best"} <= top
    plots = {a.path for a in client.list_artifacts(second.mlflow_run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/expert_usage.png"}


def test_test_outputs(runs) -> None:
    second = runs["second"]
    scores = second.test_scores
    assert scores["references"] == "text" and scores["split"] == "test" and scores["rows"] == 12
    assert scores["epochs_trained"] == 3 and 1 <= scores["best_epoch"] <= 3
    lines = second.gen_reports.read_text().splitlines()
    assert lines[0] == "id,actual_report,generated_report" and len(lines) == 13


def test_evaluate_command(runs, capsys) -> None:
    from micar.cli import main

    out = runs["tmp"] / "eval"
    best = runs["second"].best_checkpoint
    assert main(["evaluate", "--checkpoint", str(best), "--out", str(out), "--references", "reference"]) == 0
    record = json.loads((out / "scores.json").read_text())
    assert record["references"] == "reference" and record["rows"] == 12
    # Same weights, same greedy decoding: the generated test reports equal the training run's.
    assert (out / "gen_reports.csv").read_text() == runs["second"].gen_reports.read_text()
    assert json.loads(capsys.readouterr().out)["BLEU-4"] == record["BLEU-4"]


def test_score_command(runs, capsys) -> None:
    from micar.cli import main

    csv = runs["second"].gen_reports
    assert main(["score", str(csv)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["BLEU-4"] == runs["second"].test_scores["BLEU-4"]
    assert main(["score", str(csv), "--pred-col", "prediction"]) == 2
    assert "missing column(s) 'prediction'" in capsys.readouterr().err
    # Several reference columns: each row scored against both.
    import pandas as pd

    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame["second_ref"] = "there is a lesion ."
    frame.to_csv(runs["tmp"] / "two.csv", index=False)
    assert (
        main(["score", str(runs["tmp"] / "two.csv"), "--ref-col", "actual_report", "--ref-col", "second_ref"])
        == 0
    )
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {i: [a, b] for i, (a, b) in enumerate(zip(frame["actual_report"], frame["second_ref"]))}
    res = {i: [g] for i, g in enumerate(frame["generated_report"])}
    expected, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert json.loads(capsys.readouterr().out)["BLEU-4"] == pytest.approx(expected[3])


def test_generate_command(runs, tiny_prepared_dir: Path, capsys) -> None:
    import pyarrow.parquet as pq

    from micar.cli import main

    row = pq.read_table(tiny_prepared_dir / "test" / "part-0.parquet").slice(0, 1).to_pylist()[0]
    png = runs["tmp"] / "x.png"
    png.write_bytes(row["image"])
    assert main(["generate", "--checkpoint", str(runs["second"].best_checkpoint), str(png), "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    first_generated = runs["second"].gen_reports.read_text().splitlines()[1].split(",", 2)[2]
    assert only["image"] == str(png) and only["report"] == first_generated


def test_ray_data_batches_match_local_reader(ray_module, tiny_prepared_dir: Path) -> None:
    from micar.data.dataset import iter_local_batches, ray_split

    ds = ray_split(tiny_prepared_dir, "val", text_seq_len=16, image_size=32, keep_text=True)
    remote = next(iter(ds.iter_batches(batch_size=12, batch_format="numpy")))
    local = next(iter_local_batches(tiny_prepared_dir, "val", batch_size=12, text_seq_len=16))
    for key in ("image", "input_ids", "labels", "pad_mask"):
        np.testing.assert_array_equal(remote[key], local[key])
    assert list(remote["id"]) == list(local["id"])

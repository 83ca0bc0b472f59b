"""``micar demo``: the whole platform on the embedded phantom set, end to end.

phantom raw data (a real layout) -> ``micar prepare`` (Ray Data) -> ``micar train`` with
``tune_configs/demo.yaml`` (Ray Train, 2 workers) -> test-split evaluation (pycocoevalcap +
finding-level F1) -> MLflow; then a summary of where everything is. Each finished step is kept
in ``--workdir`` and skipped on a re-run unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "tune_configs" / "demo.yaml"
RUN_NAME = "demo"
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="phantom data -> prepare -> train (2 Ray workers) -> evaluate -> MLflow",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--workdir", default="demo_runs", help="where raw data, prepared shards and runs go")
    p.add_argument("--layout", default="covctr", choices=("covctr", "mmretinal", "pgross", "roco"))
    p.add_argument("--n", type=int, default=1200, help="phantom images")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (the training seed is train.seed)")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="training preset")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (default: the preset's)")
    p.add_argument("--fresh", action="store_true", help="redo every step, even finished ones")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    p.set_defaults(func=run)


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _done(start: float, note: str = "") -> None:
    print(f"    done in {time.perf_counter() - start:.1f}s{' - ' + note if note else ''}", flush=True)


def write_raw(raw: Path, *, layout: str, n: int, seed: int) -> None:
    from pipelines.phantom import read_phantom_meta, write_phantom

    start = _step(f"1/4 phantom raw data: {n} images, {layout} layout -> {raw}")
    if (raw / "phantom.json").is_file():
        meta = read_phantom_meta(raw)
        if (meta.get("layout"), meta.get("n"), meta.get("seed")) == (layout, n, seed):
            _done(start, "already there")
            return
        shutil.rmtree(raw)
    tmp = raw.with_name(raw.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_phantom(tmp, layout=layout, n=n, seed=seed)
    tmp.rename(raw)
    _done(start)


def prepare(raw: Path, prepared: Path, *, image_size: int, resize_size: int) -> dict:
    from micar.commands.prepare import summary
    from pipelines import get_pipeline
    from pipelines.phantom import read_phantom_meta
    from pipelines.runner import prepare as run_prepare

    start = _step(f"2/4 micar prepare phantom (Ray Data) -> {prepared}")
    manifest_path = prepared / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("image_size") == image_size:
            _done(start, "already prepared")
            return manifest
    meta = read_phantom_meta(raw)
    manifest = run_prepare(
        get_pipeline(meta["layout"]),
        raw,
        prepared,
        dataset="phantom",
        image_size=image_size,
        resize_size=resize_size,
        overwrite=True,
        extra_files={"findings.json": raw / "findings.json"},
        extra_manifest={"phantom": meta},
    )
    print(summary(manifest, str(prepared)))
    _done(start)
    return manifest


def finding_scores(gen_reports: Path, findings_path: Path) -> dict[str, float]:
    """Finding-level F1 of the generated test reports against the findings drawn in each image."""
    import pandas as pd

    from pipelines.phantom import finding_f1, parse_findings

    frame = pd.read_csv(gen_reports, dtype=str, keep_default_na=False)
    drawn = json.loads(findings_path.read_text(encoding="utf-8"))
    missing = [i for i in frame["id"] if i not in drawn]
    if missing:
        raise ValueError(f"{findings_path} has no findings for ids {missing[:5]} of {gen_reports}")
    f1 = finding_f1(list(frame["generated_report"]), [drawn[i] for i in frame["id"]])
    # The reference reports parse back to the drawn findings: a check that F1 measures the image.
    ref_f1 = finding_f1(list(frame["actual_report"]), [drawn[i] for i in frame["id"]])
    exact = float((frame["generated_report"] == frame["actual_report"]).mean())
    parsed = sum(bool(parse_findings(r)) for r in frame["generated_report"])
    return {
        "finding_f1": f1,
        "reference_finding_f1": ref_f1,
        "exact_match": exact,
        "reports_with_findings": parsed,
    }


def run(args: argparse.Namespace) -> int:
    from micar.config import load_config
    from micar.training.trainer import collect_result, train

    t0 = time.perf_counter()
    workdir = Path(args.workdir).resolve()
    raw, prepared, runs = workdir / "raw", workdir / "prepared", workdir / "runs"
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    overrides = [f"data.prepared_dir={prepared}", f"train.output_dir={runs}", *args.overrides]
    if args.workers:
        overrides.append(f"train.workers={args.workers}")
    cfg = load_config(args.config, overrides)

    from micar.ray_session import ensure_ray

    # One Ray session for every step, sized for the training workers plus Ray Data tasks.
    ensure_ray(min_cpus=cfg.train.workers * cfg.train.cpus_per_worker + 2)
    write_raw(raw, layout=args.layout, n=args.n, seed=args.seed)
    prepare(raw, prepared, image_size=cfg.data.image_size, resize_size=cfg.data.resize_size)

    start = _step(
        f"3/4 micar train --config {Path(args.config).name}: {cfg.train.workers} Ray Train worker(s), "
        f"{cfg.train.epochs} epochs, test with the best weights"
    )
    result = collect_result(runs / RUN_NAME, cfg)
    if result.test_scores is None:
        result = train(cfg, run_name=RUN_NAME)
        _done(start)
    else:
        _done(start, "already trained (use --fresh to redo)")
    if result.test_scores is None or result.gen_reports is None:
        raise RuntimeError(f"training finished without test scores in {result.run_dir}")

    start = _step("4/4 evaluation on the test split: pycocoevalcap metrics + finding-level F1")
    findings = finding_scores(result.gen_reports, prepared / "findings.json")
    (result.run_dir / "finding_scores.json").write_text(json.dumps(findings, indent=2), encoding="utf-8")
    _log_findings(result, findings)
    _done(start)

    _print_summary(result, findings, time.perf_counter() - t0)
    return 0


def _log_findings(result, findings: dict[str, float]) -> None:
    """Add the finding scores to the run's MLflow record (the run itself is already closed)."""
    if not result.mlflow_run_id or not result.tracking_uri:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=result.tracking_uri)
    for key in ("finding_f1", "exact_match"):
        client.log_metric(result.mlflow_run_id, f"test_{key}", float(findings[key]))
    client.log_artifact(result.mlflow_run_id, str(result.run_dir / "finding_scores.json"))


def _print_summary(result, findings: dict[str, float], seconds: float) -> None:
    import pandas as pd

    scores = result.test_scores.get("metrics", result.test_scores)
    print("\n" + "=" * 72)
    print(
        f"micar demo finished in {seconds / 60:.1f} min - test split, references: "
        f"{result.test_scores.get('references', 'text')}"
    )
    print("-" * 72)
    for name in METRICS:
        if name in scores:
            print(f"  {name:<12} {scores[name]:.4f}")
    print(
        f"  {'finding F1':<12} {findings['finding_f1']:.4f}   (exact-match reports {findings['exact_match']:.1%})"
    )
    frame = pd.read_csv(result.gen_reports, dtype=str, keep_default_na=False)
    print("-" * 72)
    for _, row in frame.head(3).iterrows():
        print(f"  image      {row['id']}")
        print(f"  reference  {row['actual_report']}")
        print(f"  generated  {row['generated_report']}\n")
    print("-" * 72)
    print(f"  best checkpoint  {result.best_checkpoint}")
    print(f"  reports CSV      {result.gen_reports}")
    for png in sorted(result.run_dir.glob("*.png")):
        print(f"  plot             {png}")
    if result.tracking_uri:
        print(f"  MLflow run       {result.mlflow_run_id}")
        print(
            f"  open the UI:     mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000"
        )
        print("                   then http://127.0.0.1:5000 -> experiment 'micar' -> run 'demo'")
    print(f"  try it:          micar generate --checkpoint {result.best_checkpoint} IMAGE.png")
    print("=" * 72)

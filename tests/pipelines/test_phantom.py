"""The phantom data set: determinism, report grammar, findings round trip, all four layouts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from micar.data.images import resize_center_crop
from pipelines import get_pipeline
from pipelines.phantom import (
    LAYOUTS,
    Finding,
    case_id,
    finding_f1,
    iter_cases,
    make_report,
    parse_findings,
    render,
    sample_case,
    write_phantom,
)


def test_reports_are_deterministic_and_seeded():
    a = [c.report for c in iter_cases(50, seed=3)]
    assert a == [c.report for c in iter_cases(50, seed=3)]
    assert a != [c.report for c in iter_cases(50, seed=4)]
    case = sample_case(7, seed=3)
    assert np.array_equal(np.asarray(render(case, 3, 64)), np.asarray(render(case, 3, 64)))


def test_vocabulary_lengths_and_normal_share():
    cases = list(iter_cases(1200, seed=0))
    words = Counter(w for c in cases for w in c.report.split())
    assert 50 <= len(words) <= 150
    lengths = [len(c.report.split()) for c in cases]
    assert 8 <= min(lengths) and max(lengths) <= 40
    normal = sum(not c.findings for c in cases) / len(cases)
    assert 0.2 <= normal <= 0.3
    assert Counter(c.modality for c in cases) == {"ct": 400, "fundus": 400, "angio": 400}
    # Cleaned form: lower case, punctuation split off, nothing any layout's cleaning would touch.
    assert all(c.report == c.report.lower() and c.report.endswith(" .") for c in cases)
    assert not set("0123456789-,:;()\"'/") & set("".join(words))


def test_report_examples():
    f = Finding("nodule", "left", "upper", "large", 2)
    assert make_report("ct", "", [f]) == (
        "axial ct image of the chest . there are two large nodules in the upper left lung . "
        "the rest of the lungs is clear ."
    )
    assert make_report("fundus", "right", []) == (
        "colour fundus photograph of the right eye . the optic disc and macula are normal . no abnormality is seen ."
    )


def test_parse_findings_inverts_the_report():
    for case in iter_cases(300, seed=1):
        assert parse_findings(case.report) == [vars(f) for f in case.findings]
    # Extra white space (ROCO's cleaning leaves double spaces) does not matter.
    assert parse_findings("there  is one small cyst in the lower right  lung .") == [
        {"finding": "cyst", "side": "right", "region": "lower", "size": "small", "count": 1}
    ]


def test_finding_f1():
    cases = list(iter_cases(60, seed=2))
    gold = [[vars(f) for f in c.findings] for c in cases]
    assert finding_f1([c.report for c in cases], gold) == 1.0
    assert finding_f1(["the the the . ."] * len(cases), gold) == 0.0
    assert finding_f1([make_report("ct", "", [])] * len(cases), gold) == 0.0
    one = Finding("nodule", "left", "upper", "large", 2)
    wrong_count = Finding("nodule", "left", "upper", "large", 3)
    # 1 TP, 1 FP (wrong count), 1 FN (wrong count), 1 FP (hallucinated on a normal image).
    preds = [make_report("ct", "", [one]), make_report("ct", "", [wrong_count]), make_report("ct", "", [one])]
    golds = [[vars(one)], [vars(one)], []]
    assert finding_f1(preds, golds) == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert finding_f1([], []) == 1.0


def test_cues_are_visible_at_64px():
    """A finding changes its quadrant of the 64 x 64 image a lot, and only that quadrant."""
    for index in range(40):
        case = sample_case(index, seed=5, normal_fraction=0.0)
        f = case.findings[0]
        img = np.asarray(resize_center_crop(render(case, 5), 64, 64), dtype=np.float32)
        normal = np.asarray(
            resize_center_crop(render(type(case)(case.index, case.modality, case.eye, []), 5), 64, 64),
            dtype=np.float32,
        )
        diff = np.abs(img - normal).mean(axis=2)
        rows = slice(0, 32) if f.region == "upper" else slice(32, 64)
        cols = slice(0, 32) if f.side == "left" else slice(32, 64)
        # Noise, brightness and vessel jitter differ between the renderings; the blobs far more.
        strong = diff > 45
        assert strong[rows, cols].sum() >= 6 * f.count, (index, f)
        # Large, spread-out blobs may touch the neighbouring quadrant by a pixel or two.
        assert strong[rows, cols].sum() >= 0.9 * strong.sum(), (index, f)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_cleans_back_to_the_phantom_reports(tmp_path, layout):
    raw = write_phantom(tmp_path / layout, layout=layout, n=24, seed=9)
    findings = json.loads((raw / "findings.json").read_text())
    index = get_pipeline(layout).build_index(raw)
    assert (index["reason"] == "").all()
    expected = {case_id(c, layout): c.report for c in iter_cases(24, seed=9)}
    assert dict(zip(index["id"], index["report"], strict=True)) == expected
    assert set(findings) == set(expected)
    for rid, report in expected.items():
        assert parse_findings(report) == findings[rid]
    meta = json.loads((raw / "phantom.json").read_text())
    assert meta["layout"] == layout and meta["n"] == 24 and meta["seed"] == 9


def test_write_phantom_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_phantom(tmp_path, layout="nope")
    with pytest.raises(ValueError, match="n must be"):
        write_phantom(tmp_path, n=5)


@pytest.mark.ray
@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_phantom_end_to_end(tmp_path, ray_module, layout):
    import ray.data

    from micar.cli import main

    raw = write_phantom(tmp_path / "raw", layout=layout, n=30, seed=1)
    out = tmp_path / "out"
    rc = main(["prepare", "phantom", "--raw", str(raw), "--out", str(out), "--image-size", "64",
               "--resize-size", "64", "--rows-per-shard", "8"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "phantom" and manifest["phantom"]["layout"] == layout
    assert manifest["rejects"] == {} and sum(manifest["splits"].values()) == 30
    assert manifest["image_size"] == 64
    assert json.loads((out / "findings.json").read_text()) == json.loads((raw / "findings.json").read_text())
    rows = ray.data.read_parquet(str(out / "test")).take_all()
    assert len(rows) == manifest["splits"]["test"]
    findings = json.loads((out / "findings.json").read_text())
    assert finding_f1([r["report"] for r in rows], [findings[r["id"]] for r in rows]) == 1.0


def test_phantom_command_writes_a_layout(tmp_path, capsys):
    import argparse

    from micar.commands import phantom as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--layout", "pgross", "--out", str(tmp_path / "p"), "--n", "18"])
    assert args.func(args) == 0
    assert "wrote 18 phantom cases (pgross layout)" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "p" / "captions.json").read_text())) == 18
    assert json.loads((tmp_path / "p" / "phantom.json").read_text())["layout"] == "pgross"

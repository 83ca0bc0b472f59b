"""COVCTR pipeline: published cleaning, published split, bad rows, and an end-to-end Ray run."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from rawfixtures import write_covctr
from sklearn.model_selection import train_test_split

from pipelines.base import SourceError, split_sizes
from pipelines.covctr import PIPELINE, clean_report
from pipelines.runner import prepare


def test_clean_report_published_rules():
    raw = (
        'Bilateral lungs show multiple patchy ground-glass opacities (GGO), mainly in the "subpleural" area; '
        "the heart is normal.\nNo pleural effusion"
    )
    assert clean_report(raw) == (
        "bilateral lungs show multiple patchy groundglass opacities ggo , mainly in the subpleural area , "
        "the heart is normal .\nno pleural effusion ."
    )
    assert clean_report("  Both lungs are clear.  ") == "both lungs are clear ."
    assert clean_report("A 3.5-cm nodule") == "a 3 .5cm nodule ."


def test_split_sizes_match_the_paper():
    assert split_sizes(726, PIPELINE.split_rule) == (580, 73, 73)


def test_split_membership_is_sklearns_on_the_full_row_list(tmp_path):
    raw = write_covctr(tmp_path / "raw", n=40)
    frame = pd.read_csv(raw / "reports.csv")
    # Bad rows must not shift the split of the good ones: break two rows.
    (raw / "images" / frame["image_id"][3]).unlink()
    frame.loc[5, "reports_En"] = "   "
    frame.to_csv(raw / "reports.csv", index=False)
    train, rest = train_test_split(frame, test_size=0.2, shuffle=True, random_state=9876)
    val, test = train_test_split(rest, test_size=0.5, shuffle=True, random_state=9876)
    index = PIPELINE.build_index(raw)
    for name, part in (("train", train), ("val", val), ("test", test)):
        assert index.loc[index["split"] == name, "id"].tolist() == part["image_id"].tolist()
    reasons = dict(zip(index["id"], index["reason"], strict=True))
    assert reasons[frame["image_id"][3]] == "missing_image"
    assert reasons[frame["image_id"][5]] == "empty_report"
    assert sum(r == "" for r in reasons.values()) == 38


def test_duplicates_keep_the_first(tmp_path):
    raw = write_covctr(tmp_path / "raw", n=20)
    frame = pd.read_csv(raw / "reports.csv")
    frame.loc[7, "image_id"] = frame.loc[2, "image_id"]  # same id, different report
    frame.loc[9, ["image_id", "reports_En"]] = frame.loc[4, ["image_id", "reports_En"]].tolist()  # identical
    frame.to_csv(raw / "reports.csv", index=False)
    index = PIPELINE.build_index(raw).set_index("row")
    assert index.loc[2, "reason"] == "" and index.loc[4, "reason"] == ""
    assert index.loc[7, "reason"] == "duplicate_id" and "row 2" in index.loc[7, "detail"]
    assert index.loc[9, "reason"] == "duplicate_row"


def test_non_utf8_row_is_rejected_not_fatal(tmp_path):
    raw = write_covctr(tmp_path / "raw", n=12, reports=[f"Report {i}." for i in range(12)])
    data = (raw / "reports.csv").read_bytes().replace(b"Report 6.", b"Report \xff\xfe6.")
    (raw / "reports.csv").write_bytes(data)
    index = PIPELINE.build_index(raw).set_index("row")
    assert index.loc[6, "reason"] == "non_utf8"
    assert (index.drop(6)["reason"] == "").all()


@pytest.mark.parametrize(
    "rename, message",
    [
        ({"reports_En": "reports_en"}, "'reports_En' \\(found 'reports_en' - misnamed"),
        ({"image_id": "img"}, "image_id"),
    ],
)
def test_missing_or_misnamed_column_stops(tmp_path, rename, message):
    raw = write_covctr(tmp_path / "raw", n=10)
    pd.read_csv(raw / "reports.csv").rename(columns=rename).to_csv(raw / "reports.csv", index=False)
    with pytest.raises(SourceError, match=f"reports.csv: missing column.*{message}"):
        PIPELINE.build_index(raw)


def test_missing_reports_file_stops(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(SourceError, match="reports.csv: file not found"):
        PIPELINE.build_index(tmp_path / "raw")


def test_embedded_newlines_are_one_record(tmp_path):
    raw = write_covctr(tmp_path / "raw", n=10, reports=[f"Line one {i}.\nLine two." for i in range(10)])
    index = PIPELINE.build_index(raw)
    assert len(index) == 10
    assert index.loc[index["row"] == 0, "report"].item() == "line one 0 .\nline two ."


@pytest.mark.ray
def test_end_to_end_with_bad_images(tmp_path, ray_module):
    raw = write_covctr(tmp_path / "raw", n=30)
    ids = pd.read_csv(raw / "reports.csv")["image_id"]
    (raw / "images" / ids[1]).write_bytes(b"garbage, not a png")
    good = (raw / "images" / ids[2]).read_bytes()
    (raw / "images" / ids[2]).write_bytes(good[: len(good) // 2])  # truncated
    (raw / "images" / ids[3]).unlink()
    out = tmp_path / "out"
    manifest = prepare(PIPELINE, raw, out, image_size=16, resize_size=20, rows_per_shard=7, min_frequency=1)
    assert manifest["rejects"] == {"missing_image": 1, "unreadable_image": 2}
    assert sum(manifest["splits"].values()) + 3 == manifest["input_rows"] == 30
    rejects = pq.read_table(out / "rejects.parquet").to_pandas()
    assert rejects[["row", "file", "reason"]].values.tolist() == [
        [1, "reports.csv", "unreadable_image"],
        [2, "reports.csv", "unreadable_image"],
        [3, "reports.csv", "missing_image"],
    ]
    assert "truncated" in rejects.loc[1, "detail"] and str(ids[2]) in rejects.loc[1, "detail"]
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["splits"] == manifest["splits"] and stored["image_size"] == 16
    for split, n in manifest["splits"].items():
        table = pq.read_table(out / split)
        assert table.num_rows == n
        assert set(table.column("source").to_pylist()) == {"covctr"}
    # --on-bad-row fail: index-level problems stop before any image work, image problems after it;
    # either way nothing is written.
    with pytest.raises(ValueError, match=r"reports.csv row 3 \(id 'case003.png'\): missing_image"):
        prepare(PIPELINE, raw, tmp_path / "out2", image_size=16, resize_size=20, on_bad_row="fail")
    (raw / "images" / ids[3]).write_bytes(good)
    with pytest.raises(
        ValueError, match=r"(?s)2 bad row.*reports.csv row 1 .*unreadable_image.*row 2 .*truncated"
    ):
        prepare(PIPELINE, raw, tmp_path / "out2", image_size=16, resize_size=20, on_bad_row="fail")
    assert not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out2")]


def test_header_only_csv_stops(tmp_path):
    raw = write_covctr(tmp_path / "raw", n=10)
    header = (raw / "reports.csv").read_text(encoding="utf-8").splitlines()[0]
    (raw / "reports.csv").write_text(header + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match="hold no rows"):
        PIPELINE.build_index(raw)

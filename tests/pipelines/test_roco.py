"""ROCO pipeline: ages / measures -> xxxx, splits from file names, parquet schema checks, a Ray run."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rawfixtures import png, real_roco, roco_table, write_roco

from pipelines.base import SourceError
from pipelines.roco import PIPELINE, clean_report
from pipelines.runner import prepare


def test_clean_report_hand_derived():
    raw = " A 45-year-old man.\nCT shows a 3.5 cm mass, and 12 mm nodule"
    # Only full stops / commas before the final one get spaces on both sides: double spaces stay.
    assert clean_report(raw) == "a xxxx man .  ct shows a xxxx mass ,  and xxxx nodule ."
    assert clean_report("After a 5 m fall, 10 years old.") == "after a xxxx fall ,  10 years old ."
    assert clean_report("Chest\tx-ray, 2 year old") == "chest x-ray ,  xxxx ."


def test_clean_report_on_real_captions():
    real = real_roco(8180)
    if real is None:
        pytest.skip("real captions not present")
    by_id = dict(real)
    cleaned = {rid: clean_report(c) for rid, c in real}
    assert all(c.endswith(" .") and c == c.lower() and "\n" not in c for c in cleaned.values())
    assert cleaned["ROCO_01235"].endswith("in a xxxx patient .")
    assert "proximal xxxx of left subclavian" in cleaned["ROCO_00076"]
    assert "measurement of xxxx ." in cleaned["ROCO_00256"] and "41.3" in by_id["ROCO_00256"]


def test_splits_come_from_file_names(tmp_path):
    raw = write_roco(tmp_path / "raw")
    index = PIPELINE.build_index(raw)
    assert index.groupby("split").size().to_dict() == {"train": 12, "val": 4, "test": 4}
    assert set(index.loc[index["split"] == "val", "file"]) == {"parquet/validation-00000-of-00001.parquet"}


def test_unknown_split_file_stops(tmp_path):
    raw = write_roco(tmp_path / "raw")
    (raw / "parquet" / "train-00000-of-00001.parquet").rename(raw / "parquet" / "extra.parquet")
    with pytest.raises(SourceError, match="cannot tell the split of \\['extra.parquet'\\]"):
        PIPELINE.build_index(raw)


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"image_id": ["a"], "caption": ["x"]}), "missing column 'image'"),
        (pa.table({"image": [b"png"], "image_id": ["a"], "caption": ["x"]}), "'image' must be a struct"),
        (
            pa.table({"image": [{"bytes": "s"}], "image_id": ["a"], "caption": ["x"]}),
            "image.bytes must be binary",
        ),
        (
            pa.table({"image": [{"bytes": b"p"}], "image_id": ["a"], "text": ["x"]}),
            "missing column 'caption'",
        ),
        (pa.table({"image": [{"bytes": b"p"}], "image_id": ["a"], "caption": [3]}), "'caption' must be text"),
    ],
)
def test_wrong_parquet_schema_stops(tmp_path, table, message):
    raw = write_roco(tmp_path / "raw")
    pq.write_table(table, raw / "parquet" / "test-00000-of-00001.parquet")
    with pytest.raises(SourceError, match=f"test-00000-of-00001.parquet: wrong schema: .*{message}"):
        PIPELINE.build_index(raw)


def test_not_a_parquet_file_stops(tmp_path):
    raw = write_roco(tmp_path / "raw")
    (raw / "parquet" / "test-00000-of-00001.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(SourceError, match="not a readable parquet file"):
        PIPELINE.build_index(raw)


@pytest.mark.ray
def test_end_to_end_with_bad_rows(tmp_path, ray_module):
    raw = write_roco(tmp_path / "raw", sizes={"train": 8, "validation": 3, "test": 3})
    good = png(1)
    rows = [
        ("R1", " A chest radiograph.", good),
        ("R2", " Truncated image.", good[: len(good) // 2]),
        ("R3", " No image at all.", None),
        ("R4", "   ", good),
        ("R1", " Same id again, other caption.", good),
        ("R5", " Fine.", good),
    ]
    pq.write_table(roco_table(rows), raw / "parquet" / "test-00000-of-00001.parquet", row_group_size=2)
    manifest = prepare(PIPELINE, raw, tmp_path / "out", image_size=16, resize_size=16, min_frequency=1)
    assert manifest["splits"] == {"train": 8, "val": 3, "test": 2}
    assert manifest["rejects"] == {"duplicate_id": 1, "empty_report": 1, "unreadable_image": 2}
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (1, "unreadable_image"), (2, "unreadable_image"), (3, "empty_report"), (4, "duplicate_id"),
    ]  # fmt: skip
    assert all(r["file"] == "parquet/test-00000-of-00001.parquet" for r in rejects)
    test_ids = pq.read_table(tmp_path / "out" / "test").column("id").to_pylist()
    assert test_ids == ["R1", "R5"]

"""PEIR Gross pipeline: cleaning after the last ':', the 70/10/20 split, JSON problems, a Ray run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from rawfixtures import write_pgross
from sklearn.model_selection import train_test_split

from pipelines.base import SourceError, split_sizes
from pipelines.pgross import PIPELINE, clean_report
from pipelines.runner import prepare


def test_clean_report_hand_derived():
    raw = "PEIR gross: Liver: Metastatic carcinoma; multiple nodules (gross). 2. Cut surface"
    assert clean_report(raw) == "metastatic carcinoma multiple nodules gross . cut surface ."
    assert (
        clean_report("Kidney: Polycystic kidney.. Enlarged, cystic")
        == "polycystic kidney . enlarged cystic ."
    )
    assert clean_report("no colon at all") == "no colon at all ."


def test_split_sizes_match_the_paper():
    assert split_sizes(7442, PIPELINE.split_rule) == (5209, 759, 1474)


def test_split_membership_is_sklearns(tmp_path):
    raw = write_pgross(tmp_path / "raw", n=30)
    keys = list(json.loads((raw / "captions.json").read_text()))
    frame = pd.DataFrame({"key": keys})
    train, rest = train_test_split(frame, test_size=0.3, shuffle=True, random_state=1234)
    val, test = train_test_split(rest, test_size=0.66, shuffle=True, random_state=1234)
    index = PIPELINE.build_index(raw)
    for name, part in (("train", train), ("val", val), ("test", test)):
        assert index.loc[index["split"] == name, "id"].tolist() == part["key"].tolist()


def test_duplicate_keys_follow_json_semantics(tmp_path):
    members = [(f"g{i}.jpg", f"Organ: Caption {i}.") for i in range(12)]
    members.append(("g3.jpg", "Organ: Replaced caption."))  # json.load keeps this value at g3's place
    members.append(("g5.jpg", "Organ: Caption 5."))  # identical repeat
    raw = write_pgross(tmp_path / "raw", members=members)
    index = PIPELINE.build_index(raw)
    kept = index[index["split"] != "none"]
    assert len(kept) == 12 and (kept["reason"] == "").all()
    assert kept.loc[kept["id"] == "g3.jpg", "report"].item() == "replaced caption ."
    dropped = index[index["split"] == "none"].set_index("row")
    assert dropped.loc[3, "reason"] == "duplicate_id" and dropped.loc[5, "reason"] == "duplicate_row"


def test_bad_values_are_rejected(tmp_path):
    members = [(f"g{i}.jpg", f"Organ: Caption {i}.") for i in range(10)]
    members[1] = ("g1.jpg", 42)
    members[2] = ("g2.jpg", None)
    members[3] = ("g3.jpg", "   ")
    raw = write_pgross(tmp_path / "raw", members=members)
    (raw / "images" / "g4.jpg").unlink()
    text = (raw / "captions.json").read_bytes().replace(b"Caption 6", b"Caption \xc3\x28 6")
    (raw / "captions.json").write_bytes(text)
    reasons = dict(zip(PIPELINE.build_index(raw)["id"], PIPELINE.build_index(raw)["reason"], strict=True))
    assert reasons["g1.jpg"] == "report_not_text"
    assert reasons["g2.jpg"] == "empty_report"
    assert reasons["g3.jpg"] == "empty_report"
    assert reasons["g4.jpg"] == "missing_image"
    assert reasons["g6.jpg"] == "non_utf8"
    assert sum(bool(r) for r in reasons.values()) == 5


@pytest.mark.parametrize(
    "text, message",
    [
        ('["a.jpg", "caption"]', "expected a JSON object .* got a list"),
        ('{"a.jpg": "caption",}', "not valid JSON .*line 1"),
        ("", "not valid JSON"),
    ],
)
def test_wrong_json_stops(tmp_path, text, message):
    raw = write_pgross(tmp_path / "raw", n=10)
    (raw / "captions.json").write_text(text)
    with pytest.raises(SourceError, match=f"captions.json: {message}"):
        PIPELINE.build_index(raw)


@pytest.mark.ray
def test_end_to_end(tmp_path, ray_module):
    raw = write_pgross(tmp_path / "raw", n=20)
    (raw / "images" / "gross_007.jpg").write_bytes(b"")
    manifest = prepare(PIPELINE, raw, tmp_path / "out", image_size=16, resize_size=16, min_frequency=1)
    assert manifest["rejects"] == {"unreadable_image": 1}
    split_of_bad = PIPELINE.build_index(raw).set_index("id").loc["gross_007.jpg", "split"]
    expected = {"train": 14, "val": 2, "test": 4}  # 20 rows: 30 % -> 6, of which 66 % -> 4
    expected[split_of_bad] -= 1
    assert manifest["splits"] == expected

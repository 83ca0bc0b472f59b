"""MM-Retinal pipeline: the published cleaning quirks, per-modality splits, bad rows, a Ray run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from rawfixtures import real_mmretinal, write_mmretinal
from sklearn.model_selection import train_test_split

from pipelines.base import SourceError, split_sizes
from pipelines.mmretinal import PIPELINE, clean_report
from pipelines.runner import prepare
from pipelines.textclean import clean_sentence


def test_clean_report_hand_derived():
    raw = (
        "Fundus image of the left eye (Fig. 3-2B). Same patient as Figure 3-1A and B\n"
        'A shows drusen; 1. Small "hard" exudates 2. Macular edema'
    )
    # Figure refs and "A shows" -> " "; "." appended; "1. " dropped; " 2. " -> ". "; each sentence is
    # stripped BEFORE its junk characters go, so "eye ( )" keeps two trailing spaces.
    assert (
        clean_report(raw) == "fundus image of the left eye   . drusen small hard exudates . macular edema ."
    )
    assert clean_report("Figure 1-2A") == " ."  # empty sentences are kept, as published


def test_character_class_range_quirk():
    # ':-\[' is a range: ';<=>?@' and '[' go too; '-' itself survives; capitals are lower-cased first.
    assert clean_sentence("Alpha@Beta<gamma>=delta[x]{y}?z;w") == "alphabetagammadeltaxyzw"
    assert clean_sentence("Sturge-Weber 0.9, C/D 'x' \\y") == "sturge-weber 09 cd x y"


def test_clean_report_on_real_captions():
    real = real_mmretinal(2167)
    if real is None:
        pytest.skip("real captions not present")
    cleaned = [clean_report(c) for c in real]
    assert all(c.endswith(" .") and c == c.lower() for c in cleaned)
    assert not any("figure 1-1a" in c or "same person as" in c for c in cleaned)
    # Row 1: "... normal person. Same person as Figure 1-1A": the reference disappears entirely.
    assert cleaned[1] == "color image of the fundus of the left eye in a normal person ."
    # Row 485: "Figure 5-5-1." leaves "-1." whose "1. " the sentence pass deletes.
    assert "patient in -the fundus temporal" in cleaned[485]
    # Row 346: "C/D is" loses "D is" ([a-z] is), then "/" and the "." of "0.9" go.
    assert "the c about 09 and the choroid" in cleaned[346]


def test_split_sizes_match_the_paper():
    sizes = [split_sizes(n, PIPELINE.split_rule) for n in (2169, 1947, 233)]
    assert [sum(s[k] for s in sizes) for k in range(3)] == [3478, 435, 436]


def test_splits_per_modality_in_cfp_ffa_oct_order(tmp_path):
    raw = write_mmretinal(tmp_path / "raw")
    index = PIPELINE.build_index(raw)
    assert (index["reason"] == "").all()
    for split in ("train", "val", "test"):
        sources = index.loc[index["split"] == split, "source"].tolist()
        assert sources == sorted(sources, key=["CFP", "FFA", "OCT"].index)
    for modality in ("CFP", "FFA", "OCT"):
        frame = pd.read_csv(raw / f"{modality}_translated_v1.csv")
        train, rest = train_test_split(frame, test_size=0.2, shuffle=True, random_state=9876)
        val, test = train_test_split(rest, test_size=0.5, shuffle=True, random_state=9876)
        mine = index[index["source"] == modality]
        for name, part in (("train", train), ("val", val), ("test", test)):
            assert mine.loc[mine["split"] == name, "id"].tolist() == part["Image_ID"].tolist()


def test_bad_rows(tmp_path):
    raw = write_mmretinal(tmp_path / "raw")
    cfp = pd.read_csv(raw / "CFP_translated_v1.csv", dtype=str, keep_default_na=False)
    (raw / "CFP" / "figure02-CFP.png").unlink()
    cfp.loc[3, "en_caption"] = " \n "
    cfp.loc[5, "Image_ID"] = cfp.loc[4, "Image_ID"]
    cfp.to_csv(raw / "CFP_translated_v1.csv", index=False)
    ffa = pd.read_csv(raw / "FFA_translated_v1.csv", dtype=str, keep_default_na=False)
    ffa.loc[0, "Image_ID"] = cfp.loc[0, "Image_ID"]  # same id in another modality: not a duplicate
    ffa.to_csv(raw / "FFA_translated_v1.csv", index=False)
    (raw / "FFA" / "figure00-FFA.png").rename(raw / "FFA" / f"{cfp.loc[0, 'Image_ID']}.png")
    index = PIPELINE.build_index(raw)
    reasons = {(r.source, r.row): r.reason for r in index.itertuples()}
    assert reasons[("CFP", 2)] == "missing_image"
    assert reasons[("CFP", 3)] == "empty_report"
    assert reasons[("CFP", 5)] in ("duplicate_id", "duplicate_row")
    assert reasons[("FFA", 0)] == ""
    assert sum(bool(r) for r in reasons.values()) == 3


def test_missing_file_or_column_stops(tmp_path):
    raw = write_mmretinal(tmp_path / "raw")
    frame = pd.read_csv(raw / "FFA_translated_v1.csv").rename(columns={"en_caption": "caption_en"})
    frame.to_csv(raw / "FFA_translated_v1.csv", index=False)
    with pytest.raises(SourceError, match="FFA_translated_v1.csv: missing column.*'en_caption'"):
        PIPELINE.build_index(raw)
    (raw / "FFA_translated_v1.csv").unlink()
    with pytest.raises(SourceError, match="FFA_translated_v1.csv: file not found"):
        PIPELINE.build_index(raw)


@pytest.mark.ray
def test_end_to_end(tmp_path, ray_module):
    raw = write_mmretinal(tmp_path / "raw")
    (raw / "OCT" / "figure01-OCT.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    manifest = prepare(PIPELINE, raw, tmp_path / "out", image_size=16, resize_size=16, min_frequency=1)
    assert manifest["rejects"] == {"unreadable_image": 1}
    assert sum(manifest["splits"].values()) == 41 and manifest["input_rows"] == 42
    by_source = manifest["rows_by_source"]
    assert sum(by_source[s].get("OCT", 0) for s in by_source) == 9
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pipeline"] == "mmretinal"

"""References, reports CSV and scores.json of micar.evaluation.decode."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from micar.evaluation.decode import (
    Decoded,
    references_of,
    scores_record,
    write_reports_csv,
    write_scores_json,
)
from micar.text.tokenizer import encode_reports, make_tokenizer


def _tokenizer():
    vocab = {"<pad>": 0, "<sos>": 1, "<eos>": 2, "<unk>": 3, ".": 4, "a": 5, "lesion": 6, "red": 7}
    return make_tokenizer(vocab)


def test_reference_modes() -> None:
    tok = _tokenizer()
    reports = ["a red lesion with a blue rim .", "a lesion ."]
    _, labels, _ = encode_reports(tok, reports, text_seq_len=6)
    batch = {"report": np.asarray(reports, dtype=object), "labels": labels}
    assert references_of(batch, tok, "text") == reports
    # Published scoring: ids decoded back - <unk> kept, cut at text_seq_len - 2 = 4 words.
    assert references_of(batch, tok, "reference") == ["a red lesion <unk>", "a lesion ."]


def test_reports_csv_and_scores_json(tmp_path: Path) -> None:
    decoded = Decoded(ids=["x1", "x2"], references=["a , b .", "c"], generated=["a b", ""])
    path = write_reports_csv(tmp_path / "out" / "gen_reports.csv", decoded)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"id": "x1", "actual_report": "a , b .", "generated_report": "a b"},
        {"id": "x2", "actual_report": "c", "generated_report": ""},
    ]
    scores = {
        "BLEU-1": 0.4,
        "BLEU-2": 0.3,
        "BLEU-3": 0.2,
        "BLEU-4": 0.1,
        "METEOR": float("nan"),
        "ROUGE-L": 0.5,
        "CIDEr": 0.7,
    }
    record = scores_record(scores, references="reference", split="test", rows=2)
    write_scores_json(tmp_path / "scores.json", record)
    loaded = json.loads((tmp_path / "scores.json").read_text())
    assert loaded["references"] == "reference" and loaded["METEOR"] is None
    assert loaded["monitored"] == 1.0 / 8 + 0.5 / 4

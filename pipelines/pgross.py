"""PEIR Gross (gross pathology, ~7,442 pairs): ``captions.json`` {image file name: caption} + ``images/``.

Report = the caption's text after its last ``:``, stripped, then the published sentence cleaner;
split 70 / 10 / 20 (``test_size`` 0.3 then 0.66, ``random_state`` 1234). A key that appears twice
in the JSON behaves as ``json.load`` made it behave for the authors: the key keeps its first
position with the LAST value; the overridden members go to the rejects (never split).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipelines.base import (
    DUPLICATE_ID,
    DUPLICATE_ROW,
    INDEX_COLUMNS,
    MISSING_IMAGE,
    NO_SPLIT,
    Pipeline,
    SourceError,
    SplitRule,
    index_row,
    list_files,
    listing_sha256,
    mark_bad_utf8,
    read_text,
    sha256_file,
    text_reason,
)
from pipelines.textclean import sentence_clean

CAPTIONS_FILE = "captions.json"
IMAGES_DIR = "images"


class _Members(list):
    """The (key, value) pairs of a JSON object, duplicates kept."""


def clean_report(raw: str) -> str:
    """The published PEIR Gross cleaning of one caption value (text after the last ':')."""
    return sentence_clean(raw.split(":")[-1].strip())


def read_members(path: Path) -> list[tuple[object, object]]:
    """The members of the top-level JSON object of ``path`` in file order (duplicates kept)."""
    text = read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_Members)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, _Members):
        raise SourceError(
            f"{path}: expected a JSON object {{image file name: caption}}, got a {type(data).__name__}"
        )
    # JSON escapes can spell lone surrogates too (\\udcff): mark them like undecodable bytes.
    return [(_mark(k), _mark(v)) for k, v in data]


def _mark(value: object) -> object:
    return mark_bad_utf8(value) if isinstance(value, str) else value


class PGrossPipeline(Pipeline):
    name = "pgross"
    cleaning_version = "pgross-1"
    split_rule = SplitRule(test_size=0.3, second_test_size=0.66, random_state=1234)

    def clean_report(self, raw: str) -> str:
        return clean_report(raw)

    def read_index(self, raw_dir: Path) -> pd.DataFrame:
        members = read_members(raw_dir / CAPTIONS_FILE)
        images = list_files(raw_dir / IMAGES_DIR)
        last: dict[object, int] = {}
        for j, (key, _) in enumerate(members):
            last[key] = j
        rows, seen = [], set()
        for key, _ in members:
            if key in seen:
                continue  # already placed at its first position
            seen.add(key)
            kept = last[key]
            value = members[kept][1]
            reason, detail = text_reason(key, value)
            path = images.get(key)
            if not reason and path is None:
                reason, detail = MISSING_IMAGE, f"no file {IMAGES_DIR}/{key}"
            rows.append(self._row(kept, key, value, path, "", reason, detail))
        for j, (key, value) in enumerate(members):
            if last[key] != j:
                same = value == members[last[key]][1]
                rows.append(
                    self._row(
                        j,
                        key,
                        value,
                        None,
                        NO_SPLIT,
                        DUPLICATE_ROW if same else DUPLICATE_ID,
                        f"key {key!r} appears again at member {last[key]}, whose value replaces this one "
                        "(JSON semantics, as published)",
                    )
                )
        return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))

    @staticmethod
    def _row(
        j: int, key: object, value: object, path: Path | None, split: str, reason: str, detail: str
    ) -> dict:
        return index_row(
            row=j,
            file=CAPTIONS_FILE,
            id=key,
            raw_report=value,
            source="pgross",
            image_path=path,
            split=split,
            reason=reason,
            detail=detail,
        )

    def source_files(self, raw_dir: Path) -> dict[str, str]:
        images = list_files(raw_dir / IMAGES_DIR).values()
        return {
            CAPTIONS_FILE: sha256_file(raw_dir / CAPTIONS_FILE),
            f"{IMAGES_DIR}/ (listing)": listing_sha256(images, raw_dir),
        }


PIPELINE = PGrossPipeline()

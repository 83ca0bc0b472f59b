"""COVCTR (COVID-19 CT reports, 726 rows): ``reports.csv`` + ``images/<image_id>``.

Report = ``reports_En`` cleaned as the published code does (datasets.md); split 80/10/10 with
``random_state`` 9876. Image ids that appear twice: the first record is kept, later ones are
rejected (``duplicate_id`` when the text differs, ``duplicate_row`` when it is identical).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.base import (
    INDEX_COLUMNS,
    MISSING_IMAGE,
    Pipeline,
    SplitRule,
    index_row,
    list_files,
    listing_sha256,
    read_csv_records,
    sha256_file,
    text_reason,
)

REPORTS_FILE = "reports.csv"
IMAGES_DIR = "images"
ID_COLUMN = "image_id"
REPORT_COLUMN = "reports_En"


def clean_report(raw: str) -> str:
    """The published COVCTR cleaning of one ``reports_En`` value."""
    text = raw.replace('"', "").replace("(", "").replace(")", "")
    text = text.replace(",", " ,").replace("-", "").replace(";", " ,").replace(".", " .")
    text = text.strip().lower()
    if not text.endswith("."):
        text += " ."
    return text


class CovctrPipeline(Pipeline):
    name = "covctr"
    cleaning_version = "covctr-1"
    split_rule = SplitRule(test_size=0.2, second_test_size=0.5, random_state=9876)

    def clean_report(self, raw: str) -> str:
        return clean_report(raw)

    def read_index(self, raw_dir: Path) -> pd.DataFrame:
        frame = read_csv_records(raw_dir / REPORTS_FILE, [ID_COLUMN, REPORT_COLUMN])
        images = list_files(raw_dir / IMAGES_DIR)
        rows = []
        for i, (image_id, report) in enumerate(zip(frame[ID_COLUMN], frame[REPORT_COLUMN], strict=True)):
            reason, detail = text_reason(image_id, report)
            path = images.get(image_id)
            if not reason and path is None:
                reason, detail = MISSING_IMAGE, f"no file {IMAGES_DIR}/{image_id}"
            rows.append(
                index_row(
                    row=i,
                    file=REPORTS_FILE,
                    id=image_id,
                    raw_report=report,
                    source="covctr",
                    image_path=path,
                    reason=reason,
                    detail=detail,
                )
            )
        return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))

    def source_files(self, raw_dir: Path) -> dict[str, str]:
        images = list_files(raw_dir / IMAGES_DIR).values()
        return {
            REPORTS_FILE: sha256_file(raw_dir / REPORTS_FILE),
            f"{IMAGES_DIR}/ (listing)": listing_sha256(images, raw_dir),
        }


PIPELINE = CovctrPipeline()

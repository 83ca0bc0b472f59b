"""MM-Retinal v1 (fundus: CFP 2169, FFA 1947, OCT 233): ``<MOD>_translated_v1.csv`` + ``<MOD>/``.

Each modality is split on its own (80/10/10, ``random_state`` 9876) and the splits are
concatenated in the order CFP, FFA, OCT; the report is ``en_caption`` cleaned by the published
figure-reference removal and sentence cleaner; ``source`` is the modality. Duplicate ids are
looked for within a modality.
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
from pipelines.textclean import remove_figure_refs, sentence_clean

MODALITIES = ("CFP", "FFA", "OCT")
ID_COLUMN = "Image_ID"
REPORT_COLUMN = "en_caption"
IMAGE_SUFFIXES = (".png", ".jpg")


def csv_name(modality: str) -> str:
    return f"{modality}_translated_v1.csv"


def clean_report(raw: str) -> str:
    """The published MM-Retinal cleaning of one ``en_caption`` value (steps 1-5 of datasets.md)."""
    return sentence_clean(remove_figure_refs(raw))


def image_files(folder: Path) -> dict[str, Path]:
    """Image_ID -> file: the file whose name without its 4-character extension is the id."""
    found: dict[str, Path] = {}
    for name, path in list_files(folder).items():
        if name.lower().endswith(IMAGE_SUFFIXES):
            found.setdefault(name[:-4], path)
    return found


class MMRetinalPipeline(Pipeline):
    name = "mmretinal"
    cleaning_version = "mmretinal-1"
    split_rule = SplitRule(test_size=0.2, second_test_size=0.5, random_state=9876)
    duplicate_scope = ("group",)

    def clean_report(self, raw: str) -> str:
        return clean_report(raw)

    def read_index(self, raw_dir: Path) -> pd.DataFrame:
        rows = []
        for modality in MODALITIES:
            frame = read_csv_records(raw_dir / csv_name(modality), [ID_COLUMN, REPORT_COLUMN])
            images = image_files(raw_dir / modality)
            for i, (image_id, report) in enumerate(zip(frame[ID_COLUMN], frame[REPORT_COLUMN], strict=True)):
                reason, detail = text_reason(image_id, report)
                path = images.get(image_id)
                if not reason and path is None:
                    reason, detail = MISSING_IMAGE, f"no file {modality}/{image_id}.png or .jpg"
                rows.append(
                    index_row(
                        row=i,
                        file=csv_name(modality),
                        id=image_id,
                        raw_report=report,
                        source=modality,
                        group=modality,
                        image_path=path,
                        reason=reason,
                        detail=detail,
                    )
                )
        return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))

    def source_files(self, raw_dir: Path) -> dict[str, str]:
        out = {}
        for modality in MODALITIES:
            out[csv_name(modality)] = sha256_file(raw_dir / csv_name(modality))
            out[f"{modality}/ (listing)"] = listing_sha256(list_files(raw_dir / modality).values(), raw_dir)
        return out


PIPELINE = MMRetinalPipeline()

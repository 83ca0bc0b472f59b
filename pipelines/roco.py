"""ROCO radiology (~65.4k / 8.2k / 8.2k, official splits): ``parquet/*.parquet``.

A file belongs to the split named in its file name (``train``, ``validation``, ``test``); columns
``image`` (struct with the encoded ``bytes``), ``image_id``, ``caption``. Only the text columns
are read on the driver; image bytes are read row group by row group inside the Ray tasks.
Duplicate ``image_id`` values are looked for across all files (train, validation, test order).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.base import (
    INDEX_COLUMNS,
    Pipeline,
    SourceError,
    decode_utf8,
    index_row,
    sha256_file,
    text_reason,
)

PARQUET_DIR = "parquet"
SPLIT_OF_NAME = (("train", "train"), ("validation", "val"), ("test", "test"))
_NEWLINES_TABS = re.compile(r"[\n\t]")
_AGE = re.compile(r"\b\d{1,3}[-\s]?(year[-\s]?old)\b", re.IGNORECASE)
_MEASURE = re.compile(r"\b\d+(?:\.\d+)?\s?(mm|cm|m|kg|g|mg|ml)\b", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def clean_report(raw: str) -> str:
    """The published ROCO cleaning of one ``caption`` value."""
    text = _NEWLINES_TABS.sub(" ", raw)
    text = _AGE.sub("xxxx", text)
    text = _MEASURE.sub("xxxx", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if not text.endswith("."):
        text += "."
    text = text[:-1].replace(".", " . ").replace(",", " , ") + " ."
    return text.strip().lower()


def split_files(raw_dir: Path) -> list[tuple[str, Path]]:
    """``(split, file)`` for every parquet file, in train, validation, test order."""
    folder = raw_dir / PARQUET_DIR
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise SourceError(f"{folder}: no parquet files found (expected e.g. train-00000-of-00001.parquet)")
    out = []
    for key, split in SPLIT_OF_NAME:
        out += [(split, f) for f in files if key in f.name]
    unknown = [f.name for f in files if not any(key in f.name for key, _ in SPLIT_OF_NAME)]
    if unknown:
        raise SourceError(
            f"{folder}: cannot tell the split of {unknown}; file names must contain train, validation or test"
        )
    return out


def check_schema(path: Path) -> pa.Schema:
    """Stop unless ``path`` has ``image`` (struct with binary ``bytes``), ``image_id`` and ``caption``."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from exc
    problems = []
    for name in ("image", "image_id", "caption"):
        if name not in schema.names:
            problems.append(f"missing column {name!r}")
    if "image" in schema.names:
        image = schema.field("image").type
        if not pa.types.is_struct(image) or image.get_field_index("bytes") < 0:
            problems.append(f"column 'image' must be a struct with a 'bytes' field, got {image}")
        elif not (
            pa.types.is_binary(image.field("bytes").type)
            or pa.types.is_large_binary(image.field("bytes").type)
        ):
            problems.append(f"image.bytes must be binary, got {image.field('bytes').type}")
    for name in ("image_id", "caption"):
        if name in schema.names:
            t = schema.field(name).type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)):
                problems.append(f"column {name!r} must be text, got {t}")
    if problems:
        raise SourceError(f"{path}: wrong schema: {'; '.join(problems)} (schema: {schema.names})")
    return schema


def _text(value: object) -> object:
    return decode_utf8(value) if isinstance(value, bytes) else value


class RocoPipeline(Pipeline):
    name = "roco"
    cleaning_version = "roco-1"
    split_rule = None

    def clean_report(self, raw: str) -> str:
        return clean_report(raw)

    def read_index(self, raw_dir: Path) -> pd.DataFrame:
        rows = []
        for split, path in split_files(raw_dir):
            check_schema(path)
            table = pq.read_table(path, columns=["image_id", "caption"])
            rel = f"{PARQUET_DIR}/{path.name}"
            for i, (image_id, caption) in enumerate(
                zip(table.column("image_id").to_pylist(), table.column("caption").to_pylist(), strict=True)
            ):
                image_id, caption = _text(image_id), _text(caption)
                reason, detail = text_reason(image_id, caption)
                rows.append(
                    index_row(
                        row=i,
                        file=rel,
                        id=image_id,
                        raw_report=caption,
                        source="roco",
                        image_parquet=str(path.resolve()),
                        image_row=i,
                        split=split,
                        reason=reason,
                        detail=detail,
                    )
                )
        return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))

    def source_files(self, raw_dir: Path) -> dict[str, str]:
        return {f"{PARQUET_DIR}/{p.name}": sha256_file(p) for _, p in split_files(raw_dir)}


PIPELINE = RocoPipeline()

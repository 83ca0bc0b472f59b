"""The shared shape of an ingestion pipeline: index the raw rows, split, clean, validate.

A pipeline turns one raw data set (datasets.md layouts) into an *index*: a pandas frame with one
row per input record, in file order, holding its source id, raw and cleaned report, where its
image is, the split it belongs to and - for a bad row - the reason it is rejected. The index is
text only (ROCO's ~82k captions are a few MB), so it is built on the driver; images are decoded,
resized and written by ``pipelines.runner`` with Ray Data, streaming, one shard per task.

Splits follow the published code exactly: the FULL row list (in file order, bad rows included) is
split with scikit-learn's ``train_test_split`` as the authors did, and only then are bad rows of
each split routed to the rejects. A clean data set therefore gets the paper's split membership
and order, and a damaged one loses only its damaged rows. Every input record ends up either in a
split or in the rejects (``check_accounting``).

Duplicates are decided here: among rows with a usable report, the first occurrence of an id (in
file order, within ``duplicate_scope``) is kept; later ones are rejected as ``duplicate_id``
(different report) or ``duplicate_row`` (identical report), so no image appears twice and none
leaks across splits.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NO_SPLIT = "none"

# Reject reasons (the values of rejects.parquet's ``reason`` column).
NON_UTF8 = "non_utf8"
MISSING_ID = "missing_id"
EMPTY_REPORT = "empty_report"
REPORT_NOT_TEXT = "report_not_text"
EMPTY_AFTER_CLEANING = "empty_after_cleaning"
DUPLICATE_ID = "duplicate_id"
DUPLICATE_ROW = "duplicate_row"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
REASONS = (
    NON_UTF8,
    MISSING_ID,
    EMPTY_REPORT,
    REPORT_NOT_TEXT,
    EMPTY_AFTER_CLEANING,
    DUPLICATE_ID,
    DUPLICATE_ROW,
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
)
# Rows rejected for their text were not usable reports for the authors either; rows rejected for
# their image or as duplicates were in the authors' train split, so their words still count
# towards the published vocabulary (see ``vocab_reports``).
TEXT_REASONS = frozenset({NON_UTF8, MISSING_ID, EMPTY_REPORT, REPORT_NOT_TEXT, EMPTY_AFTER_CLEANING})

# Values pandas' read_csv turns into NaN by default: the authors wrote each split to CSV, read it
# back and dropped rows with a missing value, so a report equal to one of these vanished.
CSV_NA_VALUES = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"}
    | {"<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)

INDEX_COLUMNS = (
    "row",  # 0-based record number inside ``file`` (CSV records, JSON members, parquet rows)
    "file",  # source file, relative to the raw directory
    "id",
    "raw_report",
    "source",
    "group",  # split group: rows are split per group (MM-Retinal modality), "" otherwise
    "image_path",  # image file (absolute) or None
    "image_parquet",  # parquet file holding the image bytes (ROCO) or None
    "image_row",  # row of that parquet file, -1 when unused
    "split",
    "reason",  # "" for a good row
    "detail",
)


def index_row(
    *,
    row: int,
    file: str,
    id: object,
    raw_report: object,
    source: str,
    group: str = "",
    image_path: Path | None = None,
    image_parquet: str | None = None,
    image_row: int = -1,
    split: str = "",
    reason: str = "",
    detail: str = "",
) -> dict:
    """One record of a source's index, with INDEX_COLUMNS as keys."""
    return {
        "row": row,
        "file": file,
        "id": id,
        "raw_report": raw_report,
        "source": source,
        "group": group,
        "image_path": str(image_path) if image_path else None,
        "image_parquet": image_parquet,
        "image_row": image_row,
        "split": split,
        "reason": reason,
        "detail": detail,
    }


# Invalid UTF-8 bytes are decoded with ``surrogateescape`` and then moved to private-use code
# points (U+F0000 + byte): pandas 3 / Arrow strings cannot hold lone surrogates, and the marker
# lets each affected row be rejected as ``non_utf8`` instead of failing the whole file.
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_UTF8 = re.compile("[\U000f0000-\U000f00ff]")


def mark_bad_utf8(text: str) -> str:
    """Replace lone surrogates (undecodable bytes) by the private-use markers ``has_bad_utf8`` finds."""
    return _SURROGATE.sub(lambda m: chr(0xF0000 + (ord(m.group()) & 0xFF)), text)


def decode_utf8(data: bytes) -> str:
    """Bytes -> str, invalid UTF-8 bytes kept as markers (see ``mark_bad_utf8``)."""
    return mark_bad_utf8(data.decode("utf-8", errors="surrogateescape"))


class SourceError(ValueError):
    """The raw data set cannot be read at all (missing file, missing column, wrong shape)."""


class BadRowError(ValueError):
    """``--on-bad-row fail`` met a bad row."""


@dataclass(frozen=True)
class SplitRule:
    """The published two-step ``train_test_split``: carve off ``test_size``, then cut that part
    with ``second_test_size`` into val (first part) and test (second part)."""

    test_size: float
    second_test_size: float
    random_state: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "test_size": self.test_size,
            "second_test_size": self.second_test_size,
            "random_state": self.random_state,
        }


def published_split(frame: pd.DataFrame, rule: SplitRule) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(train, val, test)`` exactly as the authors' two ``train_test_split`` calls produce them."""
    try:
        train, rest = train_test_split(
            frame, test_size=rule.test_size, shuffle=True, random_state=rule.random_state
        )
        val, test = train_test_split(
            rest, test_size=rule.second_test_size, shuffle=True, random_state=rule.random_state
        )
    except ValueError as exc:
        raise SourceError(
            f"{len(frame)} rows are too few for the published split {rule.as_dict()} ({exc})"
        ) from exc
    return train, val, test


def split_sizes(n: int, rule: SplitRule) -> tuple[int, int, int]:
    """Rows per split for ``n`` input rows under ``rule``."""
    train, val, test = published_split(pd.DataFrame({"i": range(n)}), rule)
    return len(train), len(val), len(test)


# ----------------------------------------------------------------------------- reading helpers


def read_text(path: Path) -> str:
    """A text file as str; invalid UTF-8 bytes survive as markers (flagged per row)."""
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    return decode_utf8(path.read_bytes()).removeprefix("\ufeff")


def has_bad_utf8(value: object) -> bool:
    return isinstance(value, str) and _BAD_UTF8.search(value) is not None


def require_columns(columns: Iterable[str], required: Iterable[str], where: str) -> None:
    """Stop with an error naming the missing columns (and near misses) of ``where``."""
    present = [str(c) for c in columns]
    missing = [c for c in required if c not in present]
    if not missing:
        return
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, present, n=1, cutoff=0.6)
        if not close:
            close = [p for p in present if p.lower() == col.lower()]
        if close:
            hints.append(f"{col!r} (found {close[0]!r} - misnamed?)")
        else:
            hints.append(repr(col))
    raise SourceError(
        f"{where}: missing column(s) {', '.join(hints)}; columns present: {present}. "
        "Rename the columns to the layout in spec/datasets.md."
    )


def read_csv_records(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """All records of a CSV as strings (quoted embedded newlines kept, empty fields as "")."""
    import io

    text = read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"{path}: not a readable CSV ({exc})") from exc
    require_columns(frame.columns, required, str(path))
    return frame.reset_index(drop=True)


def list_files(folder: Path) -> dict[str, Path]:
    """File name -> path for the plain files directly inside ``folder`` ({} if it is absent)."""
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listing_sha256(files: Iterable[Path], root: Path) -> str:
    """A cheap fingerprint of an image folder: the sorted relative names and byte sizes."""
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}" for p in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def text_reason(raw_id: object, raw_report: object) -> tuple[str, str]:
    """The text-level reject reason of a record (``("", "")`` when its text is usable)."""
    if has_bad_utf8(raw_id) or has_bad_utf8(raw_report):
        return NON_UTF8, "the id or report holds bytes that are not valid UTF-8"
    if not isinstance(raw_id, str) or not raw_id.strip():
        return MISSING_ID, "the id is empty"
    if raw_report is None or (isinstance(raw_report, float) and raw_report != raw_report):
        return EMPTY_REPORT, "the report is missing"
    if not isinstance(raw_report, str):
        return (
            REPORT_NOT_TEXT,
            f"the report is not text but {type(raw_report).__name__} {str(raw_report)[:60]!r}",
        )
    if not raw_report.strip():
        return EMPTY_REPORT, "the report is empty or white space only"
    return "", ""


# ----------------------------------------------------------------------------- the pipeline shape


class Pipeline:
    """One raw data set -> an index of rows with split, cleaned report and reject reason.

    Subclasses set ``name``, ``cleaning_version``, ``split_rule`` (None when the files give the
    splits), ``duplicate_scope`` and implement ``read_index``, ``source_files`` and
    ``clean_report``.
    """

    name: str = ""
    cleaning_version: str = ""
    split_rule: SplitRule | None = None
    # Index columns whose values together scope duplicate detection (besides the id).
    duplicate_scope: tuple[str, ...] = ()

    def clean_report(self, raw: str) -> str:
        raise NotImplementedError

    def read_index(self, raw_dir: Path) -> pd.DataFrame:
        """Rows in file order with INDEX_COLUMNS (``split`` empty unless the files give it)."""
        raise NotImplementedError

    def source_files(self, raw_dir: Path) -> dict[str, str]:
        """Relative path -> sha256 of every metadata file read (plus image folder fingerprints)."""
        raise NotImplementedError

    # -- shared steps ------------------------------------------------------------------------

    def build_index(self, raw_dir: str | Path) -> pd.DataFrame:
        """Read, split (published rule, full row list), clean and validate; one row per record."""
        raw_dir = Path(raw_dir)
        if not raw_dir.is_dir():
            raise SourceError(f"{raw_dir}: raw directory not found")
        index = self.read_index(raw_dir).reset_index(drop=True)
        if index.empty:
            raise SourceError(f"{raw_dir}: the {self.name} source files hold no rows")
        if self.split_rule is not None:
            index = self._assign_splits(index)
        index = self._clean(index)
        index = self._mark_duplicates(index)
        log.info(
            "%s: %d input rows, %d flagged before image decoding",
            self.name,
            len(index),
            int((index["reason"] != "").sum()),
        )
        return index

    def _assign_splits(self, index: pd.DataFrame) -> pd.DataFrame:
        # Records that were never rows of the published table (e.g. a JSON member overridden by
        # a later duplicate key) carry split NO_SPLIT and are kept out of the split.
        outside = index[index["split"] == NO_SPLIT]
        index = index[index["split"] != NO_SPLIT]
        parts: dict[str, list[pd.DataFrame]] = {s: [] for s in SPLITS}
        for _, group in index.groupby("group", sort=False):
            for name, part in zip(SPLITS, published_split(group, self.split_rule), strict=True):
                parts[name].append(part.assign(split=name))
        # Split order, then the published order inside each split (the authors' CSV row order).
        return pd.concat([p for s in SPLITS for p in parts[s]] + [outside], ignore_index=True)

    def _clean(self, index: pd.DataFrame) -> pd.DataFrame:
        reports: list[str] = []
        reasons = index["reason"].tolist()
        details = index["detail"].tolist()
        for i, (raw, reason) in enumerate(zip(index["raw_report"], reasons, strict=True)):
            if reason in TEXT_REASONS:
                reports.append("")
                continue
            # Rows flagged for their image are cleaned too: their words count for the vocabulary.
            report = self.clean_report(raw)
            if not reason and (report.strip() == "" or report in CSV_NA_VALUES):
                # The authors' CSV round trip + dropna removed such rows.
                reasons[i] = EMPTY_AFTER_CLEANING
                details[i] = f"the cleaned report {report!r} is empty (read back as missing)"
            reports.append(report)
        return index.assign(report=reports, reason=reasons, detail=details)

    def _mark_duplicates(self, index: pd.DataFrame) -> pd.DataFrame:
        reasons = index["reason"].tolist()
        details = index["detail"].tolist()
        first: dict[tuple, tuple[str, str, int]] = {}
        # File order, whatever the split order of the index.
        order = sorted(range(len(index)), key=lambda i: (index.at[i, "file"], index.at[i, "row"]))
        for i in order:
            if reasons[i] in TEXT_REASONS or reasons[i] in (DUPLICATE_ID, DUPLICATE_ROW):
                continue
            key = (*(index.at[i, c] for c in self.duplicate_scope), index.at[i, "id"])
            report = index.at[i, "report"]
            if key not in first:
                first[key] = (report, index.at[i, "file"], int(index.at[i, "row"]))
                continue
            kept_report, kept_file, kept_row = first[key]
            reasons[i] = DUPLICATE_ROW if report == kept_report else DUPLICATE_ID
            details[i] = (
                f"id {index.at[i, 'id']!r} already seen at {kept_file} row {kept_row} "
                f"({'same' if report == kept_report else 'different'} report); the first one is kept"
            )
        return index.assign(reason=reasons, detail=details)


def vocab_reports(index: pd.DataFrame) -> list[str]:
    """The cleaned train reports the vocabulary is built from (published rule).

    The authors built it from every row of their train split; rows we reject only for their
    image or as duplicates were in that split, so they count (keeping the published vocabulary
    sizes), while rows whose text is unusable do not.
    """
    keep = (index["split"] == "train") & ~index["reason"].isin(TEXT_REASONS)
    return index.loc[keep, "report"].tolist()


def check_accounting(input_rows: int, splits: dict[str, int], rejects: dict[str, int]) -> None:
    """Every input row ends in exactly one split or in the rejects."""
    total = sum(splits.values()) + sum(rejects.values())
    if total != input_rows:
        raise RuntimeError(
            f"row accounting is off: {input_rows} input rows but {sum(splits.values())} in splits "
            f"+ {sum(rejects.values())} rejected = {total}"
        )

"""Run a pipeline with Ray Data: decode each image once, write shards, rejects, tokenizer, manifest.

The driver holds only the text index (``Pipeline.build_index``). Good rows are cut into chunks of
``rows_per_shard`` rows of one split; a Ray Data ``map_batches`` task per chunk reads, decodes
(RGB), resizes / center-crops and PNG-encodes its images and writes the chunk's shard
``<split>/part-NNNNN.parquet`` itself, returning only small per-row metadata (reject reason or
nothing). So memory stays bounded by the chunks in flight whatever the data set's size, every
image is decoded exactly once, and shard names (hence the output) are deterministic.

Everything is written into a temporary directory beside ``out_dir`` and swapped in at the end,
so an existing prepared directory is never left half-replaced.

Output contract (read by ``micar.data`` and training):
``<out>/{train,val,test}/*.parquet`` with columns ``id``, ``report``, ``image`` (PNG bytes,
RGB, image_size x image_size), ``source``; ``<out>/manifest.json``; ``<out>/rejects.parquet``;
``<out>/tokenizer/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from micar.data.images import ImageDecodeError, decode_rgb, encode_png, resize_center_crop
from pipelines.base import (
    MISSING_IMAGE,
    SPLITS,
    UNREADABLE_IMAGE,
    BadRowError,
    Pipeline,
    check_accounting,
    vocab_reports,
)

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema(
    [("id", pa.string()), ("report", pa.string()), ("image", pa.binary()), ("source", pa.string())]
)
REJECT_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("file", pa.string()),
        ("id", pa.string()),
        ("split", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
MANIFEST_VERSION = 1


class OutputExistsError(ValueError):
    """The output directory exists and ``overwrite`` was not asked for."""


def prepare(
    pipeline: Pipeline,
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    image_size: int = 224,
    resize_size: int = 232,
    resize: bool = True,
    rows_per_shard: int = 500,
    on_bad_row: str = "reject",
    overwrite: bool = False,
    min_frequency: int = 3,
    extra_files: dict[str, Path] | None = None,
    extra_manifest: dict | None = None,
) -> dict:
    """Prepare ``raw_dir`` into ``out_dir`` (Ray must be initialised or initialisable); returns the manifest.

    ``extra_files`` are copied into the output (name -> source path), ``extra_manifest`` keys are
    added to the manifest (the phantom set uses both).
    """
    from micar.text.tokenizer import build_vocab, make_tokenizer, save_tokenizer

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if on_bad_row not in ("reject", "fail"):
        raise ValueError(f"on_bad_row must be 'reject' or 'fail', got {on_bad_row!r}")
    if resize and resize_size < image_size:
        raise ValueError(f"--resize-size ({resize_size}) must be >= --image-size ({image_size})")
    if rows_per_shard < 1:
        raise ValueError(f"--rows-per-shard must be >= 1, got {rows_per_shard}")
    _check_output(out_dir, overwrite)

    index = pipeline.build_index(raw_dir)
    if on_bad_row == "fail":
        _fail_on_rejects(index, raw_dir)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        index = _write_shards(
            index,
            tmp,
            image_size=image_size,
            resize_size=resize_size,
            resize=resize,
            rows_per_shard=rows_per_shard,
        )
        if on_bad_row == "fail":
            _fail_on_rejects(index, raw_dir)
        splits, rejects = _counts(index)
        check_accounting(len(index), splits, rejects)
        written = {
            s: sum(pq.ParquetFile(f).metadata.num_rows for f in (tmp / s).glob("*.parquet")) for s in SPLITS
        }
        if written != splits:
            raise RuntimeError(f"shards hold {written} rows but the index accounts for {splits}")
        _write_rejects(index, tmp / "rejects.parquet")

        vocab = build_vocab(vocab_reports(index), min_frequency=min_frequency)
        save_tokenizer(make_tokenizer(vocab), tmp / "tokenizer")
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)

        manifest = {
            **_manifest(pipeline, raw_dir, index, dataset or pipeline.name, len(vocab)),
            "image_size": image_size if resize else None,
            "resize_size": resize_size if resize else None,
            "resized": resize,
            "min_frequency": min_frequency,
            "rows_per_shard": rows_per_shard,
            "on_bad_row": on_bad_row,
            **(extra_manifest or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s: wrote %s (splits %s, rejects %s, vocab %d)", pipeline.name, out_dir, splits, rejects, len(vocab)
    )
    return manifest


# ----------------------------------------------------------------------------- steps


def _counts(index: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per split and rejects per reason."""
    good = index[index["reason"] == ""]
    splits = {s: int((good["split"] == s).sum()) for s in SPLITS}
    rejects = dict(sorted(Counter(index.loc[index["reason"] != "", "reason"]).items()))
    return splits, rejects


def _manifest(pipeline: Pipeline, raw_dir: Path, index: pd.DataFrame, dataset: str, vocab_size: int) -> dict:
    """The data-describing part of manifest.json (the run settings are added by ``prepare``)."""
    splits, rejects = _counts(index)
    good = index[index["reason"] == ""]
    rule = pipeline.split_rule
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "pipeline": pipeline.name,
        "splits": splits,
        "rejects": rejects,
        "input_rows": len(index),
        "rows_by_source": {
            s: dict(sorted(Counter(good.loc[good["split"] == s, "source"]).items())) for s in SPLITS
        },
        "split_rule": rule.as_dict() if rule else "given by the source files",
        "seeds": {"split_random_state": rule.random_state if rule else None},
        "cleaning_version": pipeline.cleaning_version,
        "source_files_sha256": pipeline.source_files(raw_dir),
        "image_format": "png",
        "image_mode": "RGB",
        "columns": SHARD_SCHEMA.names,
        "vocab_size": vocab_size,
        "vocab_rows": "train split rows with a usable report (image rejects and duplicates included, "
        "as in the published train split)",
    }


def _check_output(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not overwrite:
        raise OutputExistsError(
            f"{out_dir} already exists; pass --overwrite to replace it (it is swapped atomically), "
            "or choose another --out"
        )
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file()):
        raise OutputExistsError(
            f"{out_dir} exists and is not a prepared directory (no manifest.json); refusing to replace it"
        )


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp`` with renames, so readers see the old or the new, never a mix."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fail_on_rejects(index: pd.DataFrame, raw_dir: Path, limit: int = 10) -> None:
    bad = index[index["reason"] != ""]
    if bad.empty:
        return
    lines = [
        f"  {raw_dir / f} row {r} (id {i!r}): {reason} - {detail}"
        for f, r, i, reason, detail in bad[["file", "row", "id", "reason", "detail"]]
        .head(limit)
        .itertuples(index=False)
    ]
    more = f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else ""
    raise BadRowError(
        f"{len(bad)} bad row(s) with --on-bad-row fail:\n"
        + "\n".join(lines)
        + more
        + "\nFix them, or run with --on-bad-row reject to send them to rejects.parquet."
    )


def _write_rejects(index: pd.DataFrame, path: Path) -> None:
    bad = index[index["reason"] != ""].sort_values(["file", "row"], kind="stable")
    table = pa.table(
        {
            "row": pa.array(bad["row"].astype("int64").tolist(), pa.int64()),
            "file": pa.array(bad["file"].tolist(), pa.string()),
            "id": pa.array([_safe_text(v) for v in bad["id"]], pa.string()),
            "split": pa.array(bad["split"].tolist(), pa.string()),
            "reason": pa.array(bad["reason"].tolist(), pa.string()),
            "detail": pa.array(bad["detail"].tolist(), pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    pq.write_table(table, path)


def _safe_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    # Lone surrogates (from invalid UTF-8) cannot go into Arrow strings.
    return str(value).encode("utf-8", errors="backslashreplace").decode("utf-8")


def _chunks(index: pd.DataFrame, rows_per_shard: int) -> list[dict]:
    items = []
    for split in SPLITS:
        part = index[(index["reason"] == "") & (index["split"] == split)]
        for shard, start in enumerate(range(0, len(part), rows_per_shard)):
            chunk = part.iloc[start : start + rows_per_shard]
            rows = [
                {
                    "key": int(key),
                    "id": r.id,
                    "report": r.report,
                    "source": r.source,
                    "image_path": r.image_path,
                    "image_parquet": r.image_parquet,
                    "image_row": int(r.image_row),
                }
                for key, r in zip(chunk.index, chunk.itertuples(index=False), strict=True)
            ]
            items.append({"split": split, "shard": shard, "rows": json.dumps(rows)})
    return items


def _write_shards(
    index: pd.DataFrame, tmp: Path, *, image_size: int, resize_size: int, resize: bool, rows_per_shard: int
) -> pd.DataFrame:
    """Decode/resize/encode all good rows' images with Ray Data; returns the index with image rejects."""
    import ray.data

    for split in SPLITS:
        (tmp / split).mkdir()
    items = _chunks(index, rows_per_shard)
    if items:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            process_chunks,
            batch_size=1,
            batch_format="pandas",
            fn_kwargs={
                "out_dir": str(tmp),
                "image_size": image_size,
                "resize_size": resize_size,
                "resize": resize,
            },
        )
        meta = ds.to_pandas()
        if len(meta):
            failed = meta[meta["reason"] != ""]
            index = index.copy()
            index.loc[failed["key"].to_numpy(), "reason"] = failed["reason"].to_numpy()
            index.loc[failed["key"].to_numpy(), "detail"] = failed["detail"].to_numpy()
    for split in SPLITS:
        if not any((tmp / split).glob("*.parquet")):
            # An empty split still gets one (empty) shard so readers find the schema.
            pq.write_table(SHARD_SCHEMA.empty_table(), tmp / split / "part-00000.parquet")
    return index


# ----------------------------------------------------------------------------- Ray Data task


def process_chunks(
    batch: pd.DataFrame, *, out_dir: str, image_size: int, resize_size: int, resize: bool
) -> pd.DataFrame:
    """Ray Data UDF: each batch row is one chunk; write its shard, return per-row reject metadata."""
    metas = [
        _process_chunk(split, int(shard), json.loads(rows), Path(out_dir), image_size, resize_size, resize)
        for split, shard, rows in zip(batch["split"], batch["shard"], batch["rows"], strict=True)
    ]
    return pd.concat(metas, ignore_index=True) if metas else _meta_frame([])


def _meta_frame(meta: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(meta, columns=["key", "reason", "detail"]).astype(
        {"key": "int64", "reason": "object", "detail": "object"}
    )


def _process_chunk(
    split: str, shard: int, rows: list[dict], out_dir: Path, image_size: int, resize_size: int, resize: bool
) -> pd.DataFrame:
    parquet_bytes = _parquet_images(rows)
    ids, reports, images, sources, meta = [], [], [], [], []
    for r in rows:
        reason = detail = ""
        where = r["image_path"] or f"{r['image_parquet']} row {r['image_row']} (image.bytes)"
        try:
            if r["image_path"]:
                data = Path(r["image_path"]).read_bytes()
            else:
                data = parquet_bytes.get((r["image_parquet"], r["image_row"])) or b""
            img = decode_rgb(data, where)
            if resize:
                img = resize_center_crop(img, resize_size, image_size)
            png = encode_png(img)
        except FileNotFoundError:
            reason, detail = MISSING_IMAGE, f"{where}: image file disappeared"
        except ImageDecodeError as exc:
            reason, detail = UNREADABLE_IMAGE, str(exc)
        meta.append({"key": r["key"], "reason": reason, "detail": detail})
        if not reason:
            ids.append(r["id"])
            reports.append(r["report"])
            images.append(png)
            sources.append(r["source"])
    if ids:
        table = pa.table(
            {"id": ids, "report": reports, "image": images, "source": sources}, schema=SHARD_SCHEMA
        )
        pq.write_table(table, out_dir / split / f"part-{shard:05d}.parquet")
    return _meta_frame(meta)


def _parquet_images(rows: list[dict]) -> dict[tuple[str, int], bytes | None]:
    """Image bytes of the rows that live in parquet files, reading only the row groups needed."""
    wanted: dict[str, set[int]] = {}
    for r in rows:
        if r["image_parquet"]:
            wanted.setdefault(r["image_parquet"], set()).add(int(r["image_row"]))
    out: dict[tuple[str, int], bytes | None] = {}
    for path, needed in wanted.items():
        pf = pq.ParquetFile(path)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            hits = [i for i in needed if start <= i < start + n]
            if hits:
                column = pf.read_row_group(g, columns=["image"]).column("image").combine_chunks()
                data = column.field("bytes")
                for i in hits:
                    out[(path, i)] = data[i - start].as_py() if column[i - start].is_valid else None
            start += n
    return out

"""Reading a prepared directory for training and evaluation.

A prepared directory (written by ``micar prepare``) holds ``{train,val,test}/*.parquet`` shards
with columns ``id``, ``report``, ``image`` (PNG bytes, already ``image_size`` square) and
``source``, a ``manifest.json`` and a ``tokenizer/`` directory. Batches leave this module as
numpy arrays: ``image`` uint8 ``[b, H, W, 3]``, ``input_ids`` / ``labels`` int64 ``[b, t]``,
``pad_mask`` bool ``[b, t]`` (plus ``id`` and ``report`` strings for evaluation splits).
Normalisation to float happens on the training device (``to_model_inputs``).

Two readers share one batch transform (``preprocess_batch``): Ray Data for training
(``ray_split``; Ray is imported only there) and a plain pyarrow reader for ``micar evaluate``
(``iter_local_batches``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import ray.data
    import torch
    from transformers import PreTrainedTokenizerFast

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "report", "image")


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a prepared directory (the fields training needs)."""

    path: Path
    dataset: str
    image_size: int
    vocab_size: int
    splits: dict[str, Any]
    raw: dict[str, Any]


def prepared_path(prepared_dir: str | Path) -> Path:
    path = Path(prepared_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"prepared directory {path} does not exist: run `micar prepare SOURCE --raw DIR --out {path}` "
            "first, or point data.prepared_dir at one"
        )
    return path


def load_manifest(prepared_dir: str | Path) -> Manifest:
    """Read and check ``<prepared_dir>/manifest.json``."""
    path = prepared_path(prepared_dir)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise FileNotFoundError(f"{mf} is missing: {path} is not a prepared directory (run `micar prepare`)")
    try:
        raw = json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{mf}: not valid JSON ({exc})") from exc
    for key in ("dataset", "image_size"):
        if key not in raw:
            raise ValueError(f"{mf}: missing key {key!r}")
    if raw["image_size"] is None:
        raise ValueError(
            f"{path} was prepared with --no-resize (images keep their own sizes); training and "
            "evaluation batch square images of one size: re-run `micar prepare` without --no-resize"
        )
    return Manifest(
        path=path,
        dataset=str(raw["dataset"]),
        image_size=int(raw["image_size"]),
        vocab_size=int(raw.get("vocab_size", 0)),
        splits=dict(raw.get("splits", {})),
        raw=raw,
    )


def split_files(prepared_dir: str | Path, split: str) -> list[str]:
    """The parquet shards of one split, in name order (the deterministic read order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    directory = prepared_path(prepared_dir) / split
    files = sorted(str(p) for p in directory.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{directory} holds no .parquet shards (is {directory.parent} a prepared directory?)"
        )
    return files


def tokenizer_dir(prepared_dir: str | Path) -> Path:
    return prepared_path(prepared_dir) / "tokenizer"


@functools.lru_cache(maxsize=4)
def _tokenizer(directory: str) -> PreTrainedTokenizerFast:
    # Cached per process: Ray Data tasks run in reused worker processes.
    from micar.text.tokenizer import load_tokenizer

    return load_tokenizer(directory)


def decode_images(blobs: Any, ids: Any | None = None, image_size: int = 0) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 ``[b, H, W, 3]``; a corrupt image names its row id."""
    from micar.data.images import decode_rgb

    out = []
    for i, blob in enumerate(blobs):
        where = f"row id {ids[i]}" if ids is not None else f"row {i}"
        img = np.asarray(decode_rgb(bytes(blob), where), dtype=np.uint8)
        if image_size and img.shape[:2] != (image_size, image_size):
            raise ValueError(
                f"{where}: image is {img.shape[1]}x{img.shape[0]}, expected {image_size}x{image_size} "
                "(prepared with another data.image_size? re-run `micar prepare`)"
            )
        out.append(img)
    return np.stack(out) if out else np.zeros((0, image_size, image_size, 3), np.uint8)


def preprocess_batch(
    batch: dict[str, np.ndarray],
    *,
    tokenizer_path: str,
    text_seq_len: int,
    image_size: int = 0,
    keep_text: bool = False,
) -> dict[str, np.ndarray]:
    """One batch of parquet rows -> model-ready numpy arrays (decode images, tokenise reports)."""
    from micar.text.tokenizer import encode_reports

    reports = [str(r) for r in batch["report"]]
    ids = batch["id"]
    input_ids, labels, pad_mask = encode_reports(_tokenizer(tokenizer_path), reports, text_seq_len)
    out = {
        "image": decode_images(batch["image"], ids, image_size),
        "input_ids": input_ids,
        "labels": labels,
        "pad_mask": pad_mask,
    }
    if keep_text:
        out["id"] = np.asarray([str(i) for i in ids], dtype=object)
        out["report"] = np.asarray(reports, dtype=object)
    return out


def ray_split(
    prepared_dir: str | Path,
    split: str,
    *,
    text_seq_len: int,
    image_size: int = 0,
    max_rows: int = 0,
    keep_text: bool = False,
    batch_size: int = 64,
) -> ray.data.Dataset:
    """A Ray Data dataset of one split, decoded and tokenised in ``map_batches``."""
    import ray.data

    files = split_files(prepared_dir, split)
    ds = ray.data.read_parquet(files, columns=list(REQUIRED_COLUMNS))
    if max_rows:
        ds = ds.limit(max_rows)
    return ds.map_batches(
        preprocess_batch,
        batch_format="numpy",
        batch_size=batch_size,
        fn_kwargs={
            "tokenizer_path": str(tokenizer_dir(prepared_dir)),
            "text_seq_len": text_seq_len,
            "image_size": image_size,
            "keep_text": keep_text,
        },
    )


def iter_local_batches(
    prepared_dir: str | Path,
    split: str,
    *,
    batch_size: int,
    text_seq_len: int,
    image_size: int = 0,
    max_rows: int = 0,
    tokenizer_path: str | Path | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The same batches as ``ray_split(..., keep_text=True)``, read with pyarrow in this process.

    ``tokenizer_path`` (default: the prepared directory's) encodes the labels, e.g. a
    checkpoint's own vocabulary when it differs.
    """
    import pyarrow.parquet as pq

    tok = str(tokenizer_path or tokenizer_dir(prepared_dir))
    seen = 0
    for path in split_files(prepared_dir, split):
        pf = pq.ParquetFile(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (re-run `micar prepare`)")
        for rb in pf.iter_batches(batch_size=batch_size, columns=list(REQUIRED_COLUMNS)):
            cols = {c: rb.column(c).to_numpy(zero_copy_only=False) for c in REQUIRED_COLUMNS}
            if max_rows:
                take = max_rows - seen
                if take <= 0:
                    return
                cols = {c: v[:take] for c, v in cols.items()}
            seen += len(cols["id"])
            yield preprocess_batch(
                cols, tokenizer_path=tok, text_seq_len=text_seq_len, image_size=image_size, keep_text=True
            )


def count_rows(prepared_dir: str | Path, split: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in split_files(prepared_dir, split))


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[b, H, W, 3]`` (any device) -> float32 ``[b, 3, H, W]`` with ImageNet mean/std.

    ``micar.data.images.normalize`` on the tensor's own device (the GPU in training), so only
    uint8 pixels cross the host-device link.
    """
    import torch

    from micar.data.images import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def to_model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch (numpy or torch) to ``device``: normalised images and the text tensors."""
    import torch

    out = {}
    for key in ("image", "input_ids", "labels", "pad_mask"):
        value = batch[key]
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        out[key] = tensor.to(device, non_blocking=True)
    out["image"] = normalize_images(out["image"])
    return out

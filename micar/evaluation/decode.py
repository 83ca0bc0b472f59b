"""Decode a split with a trained model and write what it produced.

Batches come from ``micar.data.dataset`` (Ray Data in training, pyarrow in ``micar evaluate``):
``image`` uint8 ``[b, H, W, 3]``, ``labels``, ``id`` and ``report``. References are the cleaned
report text (``references="text"``, the default) or, as the published evaluation did, the label
ids decoded back to words (``"reference"``: truncated to text_seq_len - 2 words, ``<unk>`` kept).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from micar.data.dataset import normalize_images
from micar.evaluation.metrics import json_safe, monitored_score
from micar.text.tokenizer import EOS_ID, PAD_ID, SOS_ID, decode_ids

logger = logging.getLogger(__name__)

ReferenceMode = Literal["text", "reference"]
REPORT_COLUMNS = ("id", "actual_report", "generated_report")


@dataclass
class Decoded:
    """Generated reports of a split, row-aligned with their ids and references."""

    ids: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)

    def extend(self, other: Decoded) -> None:
        self.ids += other.ids
        self.references += other.references
        self.generated += other.generated

    def __len__(self) -> int:
        return len(self.ids)


def references_of(batch: dict[str, Any], tokenizer: Any, mode: ReferenceMode) -> list[str]:
    """The references of a batch: cleaned text, or label ids decoded back (published scoring)."""
    if mode == "text":
        return [str(r) for r in batch["report"]]
    if mode == "reference":
        labels = batch["labels"]
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        return [decode_ids(tokenizer, row) for row in labels]
    raise ValueError(f"eval.references must be 'text' or 'reference', got {mode!r}")


@torch.no_grad()
def generate_reports(
    model: torch.nn.Module,
    images: torch.Tensor,
    tokenizer: Any,
    *,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
) -> list[str]:
    """Normalised images ``[b, 3, H, W]`` -> one decoded report per image."""
    from micar.generation import generate

    # generate() switches to eval mode (no dropout) and restores the model's mode afterwards.
    ids = generate(
        model,
        images,
        max_len=max_len,
        beam_size=beam_size,
        length_penalty=length_penalty,
        sos_id=SOS_ID,
        eos_id=EOS_ID,
        pad_id=PAD_ID,
    )
    return [decode_ids(tokenizer, row.tolist()) for row in ids]


def decode_batch(
    model: torch.nn.Module,
    batch: dict[str, Any],
    tokenizer: Any,
    *,
    device: torch.device,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    references: ReferenceMode = "text",
    limit: int | None = None,
) -> Decoded:
    """Decode the first ``limit`` rows (all by default) of one batch."""
    n = len(batch["id"]) if limit is None else min(limit, len(batch["id"]))
    images = batch["image"][:n]
    images = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    images = normalize_images(images.to(device))
    generated = generate_reports(
        model, images, tokenizer, max_len=max_len, beam_size=beam_size, length_penalty=length_penalty
    )
    sub = {k: batch[k][:n] for k in ("report", "labels") if k in batch}
    return Decoded(
        ids=[str(i) for i in batch["id"][:n]],
        references=references_of(sub, tokenizer, references),
        generated=generated,
    )


def decode_split(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    tokenizer: Any,
    *,
    device: torch.device,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    references: ReferenceMode = "text",
    limit: int = 0,
) -> Decoded:
    """Decode every batch (or the first ``limit`` rows when ``limit`` > 0)."""
    out = Decoded()
    for batch in batches:
        left = None if not limit else limit - len(out)
        if left is not None and left <= 0:
            break
        out.extend(
            decode_batch(
                model,
                batch,
                tokenizer,
                device=device,
                max_len=max_len,
                beam_size=beam_size,
                length_penalty=length_penalty,
                references=references,
                limit=left,
            )
        )
    return out


def write_reports_csv(path: str | Path, decoded: Decoded) -> Path:
    """``id, actual_report, generated_report`` - the published ``gen_reports.csv`` columns plus ids."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(zip(decoded.ids, decoded.references, decoded.generated))
    tmp.replace(path)
    return path


def scores_record(
    scores: dict[str, float], *, references: ReferenceMode, split: str, rows: int, **extra: Any
) -> dict[str, Any]:
    """What ``scores.json`` holds: the metrics, the monitored score and which references made them."""
    return {
        **json_safe(scores),
        "monitored": monitored_score(scores),
        "references": references,
        "split": split,
        "rows": rows,
        **extra,
    }


def write_scores_json(path: str | Path, record: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

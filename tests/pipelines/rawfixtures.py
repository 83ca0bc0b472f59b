"""Small raw data sets in the four published layouts, for the pipeline tests.

Images are generated with PIL; report text comes from ``../shared/data/real-captions`` when it is
there (``real_*`` return None otherwise, and the tests using them skip).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
REAL_CAPTIONS = ROOT.parent / "shared" / "data" / "real-captions"


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small RGB PNG whose pixels depend on ``seed``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png(seed))).save(buf, format="JPEG")
    return buf.getvalue()


def real_mmretinal(n: int) -> list[str] | None:
    path = REAL_CAPTIONS / "mmretinal_cfp_captions.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["caption"] for row in csv.DictReader(fh)][:n]


def real_roco(n: int) -> list[tuple[str, str]] | None:
    path = REAL_CAPTIONS / "roco_validation_radiology_captions.tsv"
    if not path.is_file():
        return None
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[:n]:
        rid, caption = line.split("\t", 1)
        out.append((rid, caption))
    return out


def captions(n: int) -> list[str]:
    """``n`` realistic report texts (real MM-Retinal captions when present)."""
    real = real_mmretinal(n)
    if real and len(real) >= n:
        return real
    return [
        f"Finding number {i}. The lesion is in the left lobe, about {i} mm; no effusion." for i in range(n)
    ]


def write_covctr(root: Path, n: int = 30, reports: list[str] | None = None) -> Path:
    """COVCTR layout: reports.csv (+ the unused columns) and images/<image_id>."""
    reports = reports or captions(n)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "reports.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "findings", "terminologies", "COVID", "impression", "reports_En"])
        for i, report in enumerate(reports):
            name = f"case{i:03d}.png"
            (root / "images" / name).write_bytes(png(i))
            w.writerow([name, "双肺多发磨玻璃影", "GGO", "1", "", report])
    return root


def write_mmretinal(root: Path, sizes: dict[str, int] | None = None) -> Path:
    """MM-Retinal layout: <MOD>_translated_v1.csv and <MOD>/<Image_ID>.png|.jpg."""
    sizes = sizes or {"CFP": 20, "FFA": 12, "OCT": 10}
    texts = captions(sum(sizes.values()))
    k = 0
    for modality, n in sizes.items():
        (root / modality).mkdir(parents=True, exist_ok=True)
        with (root / f"{modality}_translated_v1.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            header = ["Image_ID", "en_caption", "cn_caption"] + (["is_multipic"] if modality == "OCT" else [])
            w.writerow(header)
            for i in range(n):
                image_id = f"figure{i:02d}-{modality}"
                if i % 2:
                    (root / modality / f"{image_id}.jpg").write_bytes(jpeg(k))
                else:
                    (root / modality / f"{image_id}.png").write_bytes(png(k))
                w.writerow([image_id, texts[k], "中文"] + (["0"] if modality == "OCT" else []))
                k += 1
    return root


def write_pgross(root: Path, n: int = 20, members: list[tuple[str, object]] | None = None) -> Path:
    """PEIR Gross layout: captions.json {file name: caption} and images/."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    if members is None:
        texts = captions(n)
        members = [(f"gross_{i:03d}.jpg", f"PEIR gross: Organ {i}: {texts[i]}") for i in range(n)]
    for i, (name, _) in enumerate(members):
        (root / "images" / name).write_bytes(png(100 + i))
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in members)
    (root / "captions.json").write_text("{\n" + body + "\n}\n", encoding="utf-8")
    return root


def roco_table(rows: list[tuple[str, str, bytes | None]]) -> pa.Table:
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table(
        {
            "image": pa.array(
                [None if b is None else {"bytes": b, "path": f"{i}.png"} for i, _, b in rows], struct
            ),
            "image_id": pa.array([i for i, _, _ in rows], pa.string()),
            "caption": pa.array([c for _, c, _ in rows], pa.string()),
        }
    )


def write_roco(root: Path, sizes: dict[str, int] | None = None) -> Path:
    """ROCO layout: parquet/{train,validation,test}-00000-of-00001.parquet."""
    sizes = sizes or {"train": 12, "validation": 4, "test": 4}
    real = real_roco(sum(sizes.values()))
    (root / "parquet").mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in sizes.items():
        rows = []
        for _ in range(n):
            rid, caption = real[k] if real else (f"ROCO_{k:05d}", f" A {k}-year-old patient, lesion of 3 cm.")
            rows.append((rid, caption, png(200 + k)))
            k += 1
        pq.write_table(
            roco_table(rows), root / "parquet" / f"{split}-00000-of-00001.parquet", row_group_size=3
        )
    return root

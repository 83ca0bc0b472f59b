"""Shared fixtures: a tiny prepared directory in the ``micar prepare`` layout, and a Ray helper.

``write_prepared_dir`` writes ``{train,val,test}/part-0.parquet`` (columns id, report, image
PNG bytes, source), ``manifest.json`` and ``tokenizer/`` exactly as the pipelines do, with
images whose colour and shape decide the report, so a tiny model can learn it in a few epochs.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

# Reports by (colour, shape) class; words repeat across classes so the vocabulary (min freq 3) holds them.
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
SHAPES = ("round", "square")


def _report(colour: str, shape: str) -> str:
    return f"there is a {colour} {shape} lesion in the centre . no other finding ."


def _image(colour: str, shape: str, size: int, rng: np.random.Generator) -> bytes:
    from PIL import Image

    img = rng.integers(0, 40, size=(size, size, 3)).astype(np.uint8)
    c = size // 2
    r = size // 4 + int(rng.integers(-2, 3))
    yy, xx = np.mgrid[:size, :size]
    if shape == "round":
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= r * r
    else:
        mask = (abs(yy - c) <= r) & (abs(xx - c) <= r)
    img[mask] = COLOURS[colour]
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_prepared_dir(
    root: Path, *, sizes: dict[str, int] | None = None, image_size: int = 32, seed: int = 0
) -> Path:
    """Write a learnable prepared directory under ``root`` and return it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from micar.text.tokenizer import build_vocab, make_tokenizer, save_tokenizer

    sizes = sizes or {"train": 48, "val": 12, "test": 12}
    rng = np.random.default_rng(seed)
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    rows: dict[str, list[dict]] = {}
    for split, n in sizes.items():
        rows[split] = []
        for i in range(n):
            colour, shape = classes[int(rng.integers(len(classes)))] if i >= len(classes) else classes[i]
            rows[split].append(
                {
                    "id": f"{split}-{i:04d}",
                    "report": _report(colour, shape),
                    "image": _image(colour, shape, image_size, rng),
                    "source": "fixture",
                }
            )
        (root / split).mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "id": pa.array([r["id"] for r in rows[split]], pa.string()),
                "report": pa.array([r["report"] for r in rows[split]], pa.string()),
                "image": pa.array([r["image"] for r in rows[split]], pa.binary()),
                "source": pa.array([r["source"] for r in rows[split]], pa.string()),
            }
        )
        pq.write_table(table, root / split / "part-0.parquet")
    tokenizer = make_tokenizer(build_vocab([r["report"] for r in rows["train"]], min_frequency=3))
    save_tokenizer(tokenizer, root / "tokenizer")
    manifest = {
        "dataset": "fixture",
        "splits": {k: len(v) for k, v in rows.items()},
        "image_size": image_size,
        "resize_size": image_size,
        "resized": True,
        "vocab_size": len(tokenizer.get_vocab()),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on 2 shared cores, torch's spinning thread pool makes tiny models
    many times slower (measured: 22 s vs 0.5 s for a tiny epoch under load). Ray workers get
    OMP_NUM_THREADS=1 from Ray already."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48/12/12-row prepared directory with 32x32 images (session-wide, read-only)."""
    return write_prepared_dir(tmp_path_factory.mktemp("prepared") / "fixture")


def start_ray(num_cpus: int = 4):
    """Start a local Ray for one test module (call from a module-scoped fixture, then ray.shutdown())."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


@pytest.fixture(scope="module")
def ray_module():
    """A local Ray session shared by the tests of one module."""
    ray = start_ray()
    yield ray
    ray.shutdown()


TINY_MODEL = {
    "model.vision.backbone": "resnet10t",
    "model.d_v": 32,
    "model.d_model": 32,
    "model.num_heads": 2,
    "model.d_latent": 48,
    "model.qk_nope_dim": 12,
    "model.qk_rope_dim": 12,
    "model.d_ff": 64,
    "model.num_layers": 1,
    "model.moe.num_experts": 4,
    "model.text_seq_len": 16,
}


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: a validated MicarConfig for a tiny model on a prepared dir, plus dotted overrides."""
    from micar.config import load_config

    def make(prepared_dir: Path, tmp: Path, **overrides):
        base = {
            **TINY_MODEL,
            "preset": "tiny",
            "data.dataset": "fixture",
            "data.prepared_dir": str(prepared_dir),
            "data.image_size": 32,
            "train.epochs": 3,
            "train.batch_size": 8,
            "train.lr": 1e-3,
            "train.v_lr": 1e-3,
            "train.step_size": 10,
            "train.grad_clip": 1.0,
            "train.workers": 1,
            "train.output_dir": str(tmp / "runs"),
            "eval.beam_size": 1,
            "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
        }
        base.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(None, base)

    return make

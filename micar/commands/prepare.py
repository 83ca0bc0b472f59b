"""``micar prepare SOURCE --raw DIR --out DIR``: raw data set -> prepared parquet shards (Ray Data)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

SOURCES = ("covctr", "mmretinal", "pgross", "roco", "phantom")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="clean, split and shard a raw data set (Ray Data)",
        description=(
            "Read a raw data set in its published layout (spec/datasets.md), clean the reports, split "
            "them as the paper did, decode/resize every image once and write <out>/{train,val,test}/"
            "*.parquet, manifest.json, rejects.parquet and tokenizer/. 'phantom' prepares a directory "
            "written by `micar phantom` (any layout)."
        ),
    )
    p.add_argument("source", choices=SOURCES, help="which data set / layout the raw directory holds")
    p.add_argument("--raw", required=True, help="raw data directory")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --overwrite)")
    p.add_argument("--image-size", type=int, default=224, help="center-crop size stored in the shards")
    p.add_argument("--resize-size", type=int, default=232, help="shorter side before the crop")
    p.add_argument("--no-resize", action="store_true", help="store decoded images at their own size")
    p.add_argument("--rows-per-shard", type=int, default=500, help="rows per parquet shard")
    p.add_argument(
        "--on-bad-row",
        choices=("reject", "fail"),
        default="reject",
        help="send bad rows to rejects.parquet (default) or stop at the first run with any",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory atomically")
    p.add_argument("--min-frequency", type=int, default=3, help="vocabulary: minimum train-split word count")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipelines import get_pipeline
    from pipelines.runner import prepare

    extra_files, extra_manifest, dataset = {}, {}, args.source
    if args.source == "phantom":
        from pipelines.phantom import read_phantom_meta

        meta = read_phantom_meta(args.raw)
        pipeline = get_pipeline(meta["layout"])
        extra_files = {"findings.json": Path(args.raw) / "findings.json"}
        extra_manifest = {"phantom": meta}
    else:
        pipeline = get_pipeline(args.source)
    from micar.ray_session import ensure_ray

    ensure_ray(args.address)
    manifest = prepare(
        pipeline,
        args.raw,
        args.out,
        dataset=dataset,
        image_size=args.image_size,
        resize_size=args.resize_size,
        resize=not args.no_resize,
        rows_per_shard=args.rows_per_shard,
        on_bad_row=args.on_bad_row,
        overwrite=args.overwrite,
        min_frequency=args.min_frequency,
        extra_files=extra_files,
        extra_manifest=extra_manifest,
    )
    print(summary(manifest, args.out))
    return 0


def summary(manifest: dict, out: str) -> str:
    """The user-facing table printed at the end of a run."""
    lines = [f"prepared {manifest['dataset']} -> {out}"]
    lines += [f"  {split:<6} {n:>8} rows" for split, n in manifest["splits"].items()]
    rejected = sum(manifest["rejects"].values())
    lines.append(f"  {'reject':<6} {rejected:>8} rows" + (f"  {manifest['rejects']}" if rejected else ""))
    lines.append(f"  vocabulary {manifest['vocab_size']} tokens (min frequency {manifest['min_frequency']})")
    size = manifest["image_size"]
    lines.append(f"  images {f'{size}x{size}' if size else 'original size'} PNG")
    return "\n".join(lines)

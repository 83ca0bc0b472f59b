"""``micar generate --checkpoint DIR IMAGE [IMAGE ...]``: write a report for each image file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a report for image files with a checkpoint",
        description=(
            "Decode each image file, resize + center-crop it as `micar prepare` does (data.resize_size, "
            "data.image_size of the checkpoint's config), normalise, and print one generated report per image."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="native checkpoint directory (e.g. runs/NAME/best)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the config's eval.beam_size)")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, report}")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def load_image(path: Path, *, resize_size: int, image_size: int):
    """An image file -> uint8 [H, W, 3] prepared like the training shards."""
    import numpy as np

    from micar.data.images import decode_rgb, resize_center_crop

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    img = decode_rgb(path.read_bytes(), str(path))
    return np.asarray(resize_center_crop(img, max(resize_size, image_size), image_size), dtype=np.uint8)


def generate_for_files(
    checkpoint: str | Path,
    images: list[str | Path],
    *,
    beam: int | None = None,
    length_penalty: float | None = None,
    device: str | None = None,
) -> list[dict[str, str]]:
    """``[{"image": path, "report": text}, ...]`` for image files, decoded with ``checkpoint``."""
    import numpy as np
    import torch

    from micar.checkpoint import load_checkpoint
    from micar.data.images import normalize
    from micar.evaluation.decode import generate_reports

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, cfg = load_checkpoint(checkpoint, map_location=dev)
    paths = [Path(p) for p in images]
    pixels = np.stack(
        [load_image(p, resize_size=cfg.data.resize_size, image_size=cfg.data.image_size) for p in paths]
    )
    out: list[dict[str, str]] = []
    batch = cfg.eval.batch_size
    for start in range(0, len(paths), batch):
        reports = generate_reports(
            model,
            normalize(pixels[start : start + batch]).to(dev),
            tokenizer,
            max_len=cfg.eval.max_len or cfg.model.text_seq_len - 1,
            beam_size=beam or cfg.eval.beam_size,
            length_penalty=cfg.eval.length_penalty if length_penalty is None else length_penalty,
        )
        out += [{"image": str(p), "report": r} for p, r in zip(paths[start : start + batch], reports)]
    return out


def run(args: argparse.Namespace) -> int:
    results = generate_for_files(
        args.checkpoint, args.images, beam=args.beam, length_penalty=args.length_penalty, device=args.device
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for row in results:
            print(f"{row['image']}: {row['report']}")
    return 0

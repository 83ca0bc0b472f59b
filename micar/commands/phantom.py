"""``micar phantom --layout X --out DIR``: write the synthetic phantom data set as raw files."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write the synthetic phantom data set in a raw layout",
        description="Write n seeded synthetic images + reports in one of the four raw layouts, "
        "plus findings.json and phantom.json; prepare them with `micar prepare phantom --raw DIR`.",
    )
    p.add_argument("--layout", choices=("covctr", "mmretinal", "pgross", "roco"), default="covctr")
    p.add_argument("--out", required=True, help="raw output directory")
    p.add_argument("--n", type=int, default=1200, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-px", type=int, default=128, help="side of the raw images in pixels")
    p.add_argument("--normal-fraction", type=float, default=0.25, help="share of images with no finding")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.phantom import write_phantom

    out = write_phantom(
        args.out,
        layout=args.layout,
        n=args.n,
        seed=args.seed,
        image_px=args.image_px,
        normal_fraction=args.normal_fraction,
    )
    print(f"wrote {args.n} phantom cases ({args.layout} layout) to {out}")
    return 0

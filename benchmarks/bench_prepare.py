"""Time ``micar prepare`` on the phantom set: rows per second and the driver's peak memory.

.venv/bin/python benchmarks/bench_prepare.py --n 1200 --layout covctr --image-size 64 --resize-size 64
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1200)
    parser.add_argument("--layout", default="covctr")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--resize-size", type=int, default=232)
    parser.add_argument("--rows-per-shard", type=int, default=500)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from pipelines import get_pipeline
    from pipelines.phantom import write_phantom
    from pipelines.runner import prepare

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        raw = write_phantom(Path(tmp) / "raw", layout=args.layout, n=args.n)
        t_write = time.perf_counter() - t0
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        manifest = prepare(
            get_pipeline(args.layout),
            raw,
            Path(tmp) / "out",
            image_size=args.image_size,
            resize_size=args.resize_size,
            rows_per_shard=args.rows_per_shard,
        )
        t_prep = time.perf_counter() - t0
        ray.shutdown()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = sum(manifest["splits"].values())
    print(
        f"phantom {args.layout} n={args.n}: write {t_write:.1f}s; prepare {t_prep:.1f}s "
        f"({rows / t_prep:.0f} rows/s, {args.image_size}px); driver peak RSS {peak_mb:.0f} MB; "
        f"splits {manifest['splits']} vocab {manifest['vocab_size']}"
    )


if __name__ == "__main__":
    main()

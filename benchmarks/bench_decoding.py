"""Cached vs uncached decoding (greedy by default) on a small random model (images encoded once, outside the
timing). Prints both times and their ratio.

    python benchmarks/bench_decoding.py [--max-len 59] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from micar.config import config_from_dict
from micar.generation import eval_mode, generate
from micar.model import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=59)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = {
        "num_layers": 3,
        "d_model": 256,
        "d_latent": 384,
        "num_heads": 8,
        "qk_nope_dim": 24,
        "qk_rope_dim": 24,
        "d_ff": 1024,
        "d_v": 64,
        "text_seq_len": args.max_len + 1,
        "vocab_size": 1000,
        "vision": {"backbone": "test_resnet"},
    }
    model = build_model(config_from_dict({"model": cfg}).model).eval()
    with eval_mode(model):
        encoded = model.encode_images(torch.randn(args.batch, 3, 64, 64))
    # A random model rarely emits <eos>; with eos_id=-1 every run decodes all max_len steps.
    kw = dict(max_len=args.max_len, beam_size=args.beam_size, eos_id=-1)
    times = {}
    outputs = {}
    for use_cache in (True, False):
        generate(model, encoded, **{**kw, "max_len": 4}, use_cache=use_cache)  # warm-up
        start = time.perf_counter()
        outputs[use_cache] = generate(model, encoded, **kw, use_cache=use_cache)
        times[use_cache] = time.perf_counter() - start
    assert torch.equal(outputs[True], outputs[False])
    print(
        f"decoding (beam {args.beam_size}{', greedy' if args.beam_size == 1 else ''}), batch {args.batch}, {args.max_len} steps, 3 layers, d 256, "
        f"{args.threads} thread(s): cached {times[True]:.2f} s, uncached {times[False]:.2f} s, "
        f"speed-up x{times[False] / times[True]:.2f}"
    )


if __name__ == "__main__":
    main()

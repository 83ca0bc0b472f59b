"""Sparse MoE dispatch vs the published dense form (every expert on every token, unselected
tokens zeroed). Prints both forward times and their ratio.

    python benchmarks/bench_moe.py [--tokens 640] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from micar.modules.moe import MixtureOfExperts


def dense_forward(moe: MixtureOfExperts, x: torch.Tensor) -> torch.Tensor:
    """The published computation: each expert runs on all tokens, zeroed where not selected."""
    flat = x.reshape(-1, x.shape[-1])
    routing = moe.gate(flat)
    out = torch.zeros_like(flat)
    for e, expert in enumerate(moe.experts):
        selected = (routing.experts == e).any(dim=-1, keepdim=True).to(flat.dtype)
        out += expert(flat * selected)
    return out.view_as(x)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=640, help="tokens per forward (16 captions x 40)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    moe = MixtureOfExperts(d_model=512, d_ff=2048, num_experts=args.experts, k=args.k).eval()
    x = torch.randn(1, args.tokens, 512)
    with torch.no_grad():
        torch.testing.assert_close(moe(x).hidden, dense_forward(moe, x), atol=1e-4, rtol=1e-4)
        sparse = timed(lambda: moe(x), args.repeats)
        dense = timed(lambda: dense_forward(moe, x), args.repeats)
    print(
        f"MoE forward, {args.tokens} tokens, d 512, d_ff 2048, {args.experts} experts, top-{args.k}, "
        f"{args.threads} thread(s): sparse {sparse * 1e3:.1f} ms, dense-all-experts {dense * 1e3:.1f} ms, "
        f"speed-up x{dense / sparse:.2f} (ideal {args.experts / args.k:.1f})"
    )


if __name__ == "__main__":
    main()

"""Small helpers for code that runs on every Ray Train worker: rank, rank-zero logging, reductions."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed, or (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    return world()[0] == 0


def rank_zero_info(logger: logging.Logger, msg: str, *args: object) -> None:
    """``logger.info`` on rank 0 only (so N workers print one progress line, not N)."""
    if is_rank_zero():
        logger.info(msg, *args)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place; a no-op for a single process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def setup_worker_logging(level: int = logging.INFO) -> None:
    """Give the ``micar`` logger a handler inside Ray workers (whose root logger is bare)."""
    log = logging.getLogger("micar")
    log.setLevel(level)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    # Ray Train logs every ray.train.report call with the whole metrics dict (dozens of expert-usage
    # keys per epoch); the epoch line micar logs says what matters. Its logger is named by file path.
    try:
        from ray.train.v2._internal.execution import context as _train_context
    except ImportError:  # another Ray layout: keep its logging as it is
        return
    logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)

"""The per-epoch pieces of training, as plain functions over batches (no Ray in here).

``train_one_epoch`` and ``validate`` take any iterable of batches in the ``micar.data.dataset``
format, so they run the same under Ray Train (Ray Data shards), in tests (pyarrow batches) or
in a notebook. ``micar.training.worker`` strings them together on each Ray Train worker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from micar.config import MicarConfig
from micar.data.dataset import to_model_inputs
from micar.evaluation.decode import Decoded, decode_batch
from micar.model import compute_loss
from micar.text.tokenizer import PAD_ID
from micar.training.distributed import all_reduce_sum

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one (epoch, rank): distinct per rank, reproducible after a resume."""
    return (int(seed) * 1_000_003 + epoch * 10_007 + rank) % (2**32)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op on CPU (CPU runs stay float32 and deterministic)."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


@dataclass
class EpochStats:
    """What one training epoch measured (summed over all ranks)."""

    loss: float
    caption_loss: float
    balance_loss: float
    samples: int
    steps: int
    seconds: float
    expert_counts: torch.Tensor  # [num_layers, e] token-routing counts

    def metrics(self) -> dict[str, float]:
        out = {
            "train_loss": self.loss,
            "train_ce": self.caption_loss,
            "train_balance": self.balance_loss,
            "samples_per_s": self.samples / max(self.seconds, 1e-9),
            "epoch_time_s": self.seconds,
        }
        counts = self.expert_counts.double()
        if counts.numel():
            usage = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
            for layer, row in enumerate(usage.tolist()):
                for e, frac in enumerate(row):
                    out[f"expert_usage/layer{layer}/e{e}"] = frac
        return out


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    cfg: MicarConfig,
    *,
    device: torch.device,
    fail_after_first_batch: bool = False,
) -> EpochStats:
    """One pass over ``batches``: CE (ignoring <pad>) + balance_coef * balance loss, with
    gradient accumulation (``train.grad_accum``), clipping (``train.grad_clip``) and bf16 on GPU.

    ``model`` may be DDP-wrapped; gradients sync only on the last micro-batch of each step.
    """
    tc = cfg.train
    model.train()
    core = unwrap(model)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, ce, balance, batches
    samples = torch.zeros(1, dtype=torch.float64, device=device)
    counts: torch.Tensor | None = None
    steps = 0
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for i, (batch, last) in enumerate(_with_last(batches)):
        inputs = to_model_inputs(batch, device)
        sync = last or (i + 1) % tc.grad_accum == 0
        no_sync = getattr(model, "no_sync", None)
        with nullcontext() if sync or no_sync is None else no_sync():
            with autocast(device, tc.bf16):
                out = model(inputs["image"], inputs["input_ids"], inputs["pad_mask"])
            losses = compute_loss(
                out, inputs["labels"], balance_coef=cfg.model.moe.balance_coef, pad_id=PAD_ID
            )
            (losses.loss / tc.grad_accum).backward()
        if sync:
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(core.parameters(), tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
        sums += torch.stack(
            [
                losses.loss.detach(),
                losses.caption_loss.detach(),
                losses.balance_loss.detach(),
                torch.ones((), device=device),
            ]
        ).double()
        samples += inputs["labels"].shape[0]
        batch_counts = out.expert_counts.detach().to(torch.float64)
        counts = batch_counts if counts is None else counts + batch_counts
        if fail_after_first_batch:
            raise RuntimeError("MICAR_FAIL_AT_EPOCH test hook: simulated worker crash")
    seconds = time.perf_counter() - start
    all_reduce_sum(sums)
    all_reduce_sum(samples)
    if counts is not None:
        all_reduce_sum(counts)
    n = max(sums[3].item(), 1.0)
    return EpochStats(
        loss=sums[0].item() / n,
        caption_loss=sums[1].item() / n,
        balance_loss=sums[2].item() / n,
        samples=int(samples.item()),
        steps=steps,
        seconds=seconds,
        expert_counts=(counts if counts is not None else torch.zeros(0, 0)).cpu(),
    )


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    tokenizer: Any,
    cfg: MicarConfig,
    *,
    device: torch.device,
    decode_limit: int = 0,
    decode: bool = True,
) -> tuple[float, Decoded]:
    """Per-token cross-entropy over all ``batches`` and the decoded reports of the first
    ``decode_limit`` rows (all rows when 0; none when ``decode`` is False)."""
    ec = cfg.eval
    core = unwrap(model)
    core.eval()
    loss_sum = 0.0
    tokens = 0
    decoded = Decoded()
    max_len = ec.max_len or cfg.model.text_seq_len - 1
    for batch in batches:
        inputs = to_model_inputs(batch, device)
        with autocast(device, cfg.train.bf16):
            out = core(inputs["image"], inputs["input_ids"], inputs["pad_mask"])
        labels = inputs["labels"]
        loss_sum += F.cross_entropy(
            out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=PAD_ID, reduction="sum"
        ).item()
        tokens += int((labels != PAD_ID).sum().item())
        left = None if not decode_limit else decode_limit - len(decoded)
        if decode and (left is None or left > 0):
            with autocast(device, cfg.train.bf16):
                decoded.extend(
                    decode_batch(
                        core,
                        batch,
                        tokenizer,
                        device=device,
                        max_len=max_len,
                        beam_size=ec.beam_size,
                        length_penalty=ec.length_penalty,
                        references=ec.references,
                        limit=left,
                    )
                )
    return loss_sum / max(tokens, 1), decoded

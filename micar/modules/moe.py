"""Mixture of experts with a top-k softmax router and sparse dispatch (spec section 6).

Each expert runs only on the tokens routed to it: assignments are sorted by expert, each expert
gathers its rows, and the outputs are added back with ``index_add_``. The published code ran
every expert on every token and zeroed the unselected ones; since the experts are bias-free and
act(0) = 0, the two give the same numbers.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from micar.modules.layers import FeedForward


class MoEOutput(NamedTuple):
    hidden: Tensor  # [b, t, d]
    balance_loss: Tensor  # scalar
    expert_counts: Tensor  # [e] long, token assignments per expert


class Routing(NamedTuple):
    probs: Tensor  # [N, e] softmax over experts (float32)
    weights: Tensor  # [N, k] top-k probabilities renormalised to sum 1
    experts: Tensor  # [N, k] long


class Router(nn.Module):
    """Linear scores over experts for every token (pads included), softmax, top-k, renormalised."""

    def __init__(self, *, d_model: int, num_experts: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.gate = nn.Linear(d_model, num_experts, bias=False)

    def forward(self, x: Tensor) -> Routing:
        """x [N, d] -> probabilities [N, e] and the top-k choice [N, k]"""
        probs = self.gate(x).float().softmax(dim=-1)
        top, experts = probs.topk(self.k, dim=-1)
        return Routing(probs, top / top.sum(dim=-1, keepdim=True), experts)


class MixtureOfExperts(nn.Module):
    """E SwiGLU experts behind a top-k router; returns hidden states, balance loss and loads.

    ``combine``: ``unweighted`` adds the k selected outputs with weight 1 (the published
    **quirk**; the router then learns only from the balance loss), ``weighted`` multiplies each
    by its renormalised router value. ``balance_loss``: ``entropy`` = sum_e pbar_e log(pbar_e +
    1e-8) with pbar the mean routing probability (published), ``switch`` = e * sum_e f_e P_e
    with f_e the fraction of assignments and P_e the mean probability of expert e.
    """

    def __init__(
        self,
        *,
        d_model: int,
        d_ff: int,
        num_experts: int,
        k: int,
        act_fn: str = "silu",
        dropout: float = 0.0,
        combine: Literal["unweighted", "weighted"] = "unweighted",
        balance_loss: Literal["entropy", "switch"] = "entropy",
    ) -> None:
        super().__init__()
        if combine not in ("unweighted", "weighted"):
            raise ValueError(f"combine must be 'unweighted' or 'weighted', got {combine!r}")
        if balance_loss not in ("entropy", "switch"):
            raise ValueError(f"balance_loss must be 'entropy' or 'switch', got {balance_loss!r}")
        self.num_experts = num_experts
        self.k = k
        self.combine = combine
        self.balance_kind = balance_loss
        self.gate = Router(d_model=d_model, num_experts=num_experts, k=k)
        self.experts = nn.ModuleList(
            FeedForward(d_model=d_model, d_ff=d_ff, act_fn=act_fn, dropout=dropout)
            for _ in range(num_experts)
        )

    def balance_loss(self, routing: Routing, counts: Tensor) -> Tensor:
        mean_probs = routing.probs.mean(dim=0)
        if self.balance_kind == "entropy":
            return (mean_probs * torch.log(mean_probs + 1e-8)).sum()
        fraction = counts.to(mean_probs.dtype) / counts.sum().clamp(min=1)
        return self.num_experts * (fraction * mean_probs).sum()

    def forward(self, x: Tensor) -> MoEOutput:
        """x [b, t, d] -> MoEOutput(hidden [b, t, d], balance_loss [], expert_counts [e])"""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        routing = self.gate(flat)
        # [N, k] -> [N * k]: one row per (token, chosen expert), sorted by expert
        expert_ids = routing.experts.reshape(-1)
        order = expert_ids.argsort(stable=True)
        token_ids = order // self.k
        counts = torch.bincount(expert_ids, minlength=self.num_experts)
        out = torch.zeros_like(flat)
        per_expert = counts.tolist()
        start = 0
        for e, count in enumerate(per_expert):
            if count == 0:
                continue
            rows = token_ids[start : start + count]
            y = self.experts[e](flat.index_select(0, rows))
            if self.combine == "weighted":
                weight = routing.weights.reshape(-1)[order[start : start + count]]
                y = y * weight.to(y.dtype).unsqueeze(-1)
            out.index_add_(0, rows, y.to(out.dtype))
            start += count
        return MoEOutput(out.view(shape), self.balance_loss(routing, counts), counts)

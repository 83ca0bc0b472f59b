"""micar.modules.moe: router, sparse dispatch, combine modes, balance losses (golden parity)."""

from __future__ import annotations

import pytest
import torch
from golden import golden, needs_golden

from micar.modules.moe import MixtureOfExperts, MoEOutput


def naive(moe: MixtureOfExperts, x: torch.Tensor) -> torch.Tensor:
    """A per-token loop over the selected experts."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(moe.gate.gate(flat), dim=-1)
    out = torch.zeros_like(flat)
    for i, token in enumerate(flat):
        top, idx = probs[i].topk(moe.k)
        top = top / top.sum()
        for w, e in zip(top, idx, strict=True):
            y = moe.experts[int(e)](token)
            out[i] += y * w if moe.combine == "weighted" else y
    return out.view_as(x)


@needs_golden
@pytest.mark.parametrize("name", ["moe_e4_k2", "moe_e8_k2", "moe_e3_k1"])
def test_moe_matches_published(name):
    cfg, params, inputs, outputs = golden(name)
    moe = MixtureOfExperts(**cfg).eval()
    moe.load_state_dict(params)
    with torch.no_grad():
        out = moe(inputs["x"])
    assert isinstance(out, MoEOutput)
    torch.testing.assert_close(out.hidden, outputs["y"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.balance_loss, outputs["balance_loss"].reshape(()), atol=1e-5, rtol=0)
    n_tokens = inputs["x"].shape[0] * inputs["x"].shape[1]
    assert out.expert_counts.dtype == torch.long
    assert int(out.expert_counts.sum()) == n_tokens * cfg["k"]


@pytest.mark.parametrize("combine", ["unweighted", "weighted"])
@pytest.mark.parametrize("num_experts,k", [(4, 2), (5, 3), (3, 1)])
def test_sparse_dispatch_equals_naive_loop(combine, num_experts, k):
    torch.manual_seed(0)
    moe = MixtureOfExperts(d_model=8, d_ff=16, num_experts=num_experts, k=k, combine=combine).eval()
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(moe(x).hidden, naive(moe, x), atol=1e-5, rtol=0)


def test_counts_and_balance_losses():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 8)
    entropy = MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=2)
    switch = MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=2, balance_loss="switch")
    switch.load_state_dict(entropy.state_dict())
    probs = torch.softmax(entropy.gate.gate(x.reshape(-1, 8)), dim=-1)
    chosen = probs.topk(2, dim=-1).indices
    counts = torch.bincount(chosen.flatten(), minlength=4)
    pbar = probs.mean(0)
    out = entropy(x)
    assert torch.equal(out.expert_counts, counts)
    torch.testing.assert_close(out.balance_loss, (pbar * torch.log(pbar + 1e-8)).sum())
    expected = 4 * ((counts.float() / counts.sum()) * pbar).sum()
    torch.testing.assert_close(switch(x).balance_loss, expected)


@pytest.mark.parametrize("combine", ["unweighted", "weighted"])
def test_router_gradient_only_when_weighted(combine):
    torch.manual_seed(0)
    moe = MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=2, combine=combine)
    moe(torch.randn(2, 5, 8)).hidden.square().sum().backward()
    grad = moe.gate.gate.weight.grad
    if combine == "unweighted":
        assert grad is None or torch.count_nonzero(grad) == 0
    else:
        assert grad is not None and grad.abs().sum() > 0
    # the balance loss always reaches the router
    moe.zero_grad()
    moe(torch.randn(2, 5, 8)).balance_loss.backward()
    assert moe.gate.gate.weight.grad.abs().sum() > 0


def test_unselected_experts_do_no_work():
    torch.manual_seed(0)
    moe = MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=1)
    seen: dict[int, int] = {}
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, inp, out, e=e: seen.__setitem__(e, inp[0].shape[0]))
    out = moe(torch.randn(1, 6, 8))
    assert sum(seen.values()) == 6  # each token ran through exactly one expert
    assert {e: int(c) for e, c in enumerate(out.expert_counts) if c} == seen


def test_bad_kinds_are_rejected():
    with pytest.raises(ValueError, match="combine"):
        MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=2, combine="mean")
    with pytest.raises(ValueError, match="balance_loss"):
        MixtureOfExperts(d_model=8, d_ff=16, num_experts=4, k=2, balance_loss="z")

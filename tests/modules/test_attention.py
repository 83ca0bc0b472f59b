"""micar.modules.attention: latent self/cross attention (golden parity, quirks), vanilla
ablation, KV cache."""

from __future__ import annotations

import pytest
import torch
from golden import golden, needs_golden

from micar.modules.attention import (
    KVCache,
    LatentCrossAttention,
    LatentSelfAttention,
    VanillaCrossAttention,
    VanillaSelfAttention,
    merge_heads,
    split_heads_fastest,
)

SMALL = dict(d_model=16, num_heads=2, d_latent=24, qk_nope_dim=4, qk_rope_dim=8)


def causal_pad_mask(pad_mask: torch.Tensor) -> torch.Tensor:
    t = pad_mask.shape[1]
    return torch.ones(t, t, dtype=torch.bool).tril()[None, None] & pad_mask.bool()[:, None, None, :]


@needs_golden
@pytest.mark.parametrize("size", ["small", "paper"])
def test_self_attention_matches_published(size):
    cfg, params, inputs, outputs = golden(f"self_attention_{size}")
    attn = LatentSelfAttention(**cfg).eval()
    attn.load_state_dict(params)
    with torch.no_grad():
        torch.testing.assert_close(attn(inputs["x"]), outputs["y_no_mask"], atol=1e-5, rtol=0)
        y = attn(inputs["x"], causal_pad_mask(inputs["pad_mask"]))
    torch.testing.assert_close(y, outputs["y_causal_pad"], atol=1e-5, rtol=0)


@needs_golden
@pytest.mark.parametrize("size", ["small", "paper"])
def test_cross_attention_matches_published(size):
    cfg, params, inputs, outputs = golden(f"cross_attention_{size}")
    attn = LatentCrossAttention(**cfg).eval()
    attn.load_state_dict(params)
    with torch.no_grad():
        torch.testing.assert_close(attn(inputs["x"], inputs["image"]), outputs["y"], atol=1e-5, rtol=0)


def test_head_split_and_merge_quirk():
    # 6 features, 2 heads: split puts even features in head 0; merge is head-major.
    x = torch.arange(6.0).view(1, 1, 6)
    heads = split_heads_fastest(x, 2)
    assert heads[0, 0, 0].tolist() == [0, 2, 4]
    assert heads[0, 1, 0].tolist() == [1, 3, 5]
    assert merge_heads(heads)[0, 0].tolist() == [0, 2, 4, 1, 3, 5]


def test_partial_rope_rotates_first_half_in_adjacent_pairs():
    attn = LatentSelfAttention(d_model=512, num_heads=8, d_latent=768, qk_nope_dim=48, qk_rope_dim=48)
    torch.testing.assert_close(attn.rope.freqs, 10000 ** (-torch.arange(0, 24, 2).float() / 24))
    x = torch.randn(1, 1, 3, 96)
    y = attn.rope(x, torch.arange(3))
    torch.testing.assert_close(y[..., :48], x[..., :48])  # nope branch untouched
    torch.testing.assert_close(y[..., 72:], x[..., 72:])  # second half of rope untouched
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0 is the identity
    angle = 2 * attn.rope.freqs[1]  # position 2, pair 1 = features 50, 51
    x0, x1 = x[0, 0, 2, 50], x[0, 0, 2, 51]
    torch.testing.assert_close(y[0, 0, 2, 50], x0 * angle.cos() - x1 * angle.sin())
    torch.testing.assert_close(y[0, 0, 2, 51], x1 * angle.cos() + x0 * angle.sin())


@pytest.mark.parametrize("kind", ["latent", "vanilla"])
def test_cached_self_attention_equals_full_causal(kind):
    torch.manual_seed(0)
    if kind == "latent":
        attn = LatentSelfAttention(**SMALL).eval()
    else:
        attn = VanillaSelfAttention(d_model=16, num_heads=2).eval()
    x = torch.randn(3, 5, 16)
    full = attn(x, causal_pad_mask(torch.ones(3, 5)))
    cache = KVCache(max_len=5)
    steps = [attn(x[:, :2], causal_pad_mask(torch.ones(3, 2)), cache=cache)]
    steps += [attn(x[:, i : i + 1], cache=cache) for i in range(2, 5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=0)
    assert cache.length == 5
    with pytest.raises(ValueError, match="KV cache holds 5 positions"):
        attn(x[:, :1], cache=cache)


@pytest.mark.parametrize("kind", ["latent", "vanilla"])
def test_causal_mask_hides_later_tokens(kind):
    torch.manual_seed(0)
    attn = LatentSelfAttention(**SMALL) if kind == "latent" else VanillaSelfAttention(d_model=16, num_heads=2)
    attn.eval()
    x = torch.randn(2, 6, 16)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 16)
    mask = causal_pad_mask(torch.ones(2, 6))
    torch.testing.assert_close(attn(x, mask)[:, :4], attn(changed, mask)[:, :4])
    assert not torch.allclose(attn(x, mask)[:, 4:], attn(changed, mask)[:, 4:])


def test_vanilla_cross_attention_shapes_and_memory():
    torch.manual_seed(0)
    for attn in (VanillaCrossAttention(d_model=16, num_heads=2), LatentCrossAttention(**SMALL)):
        attn.eval()
        x, image = torch.randn(2, 4, 16), torch.randn(2, 9, 16)
        y = attn(x, image)
        assert y.shape == (2, 4, 16)
        memory = attn.project_memory(image)
        # one query at a time (its own text position) equals the full call
        rows = [attn.attend(x[:, i : i + 1], memory, start=i) for i in range(4)]
        torch.testing.assert_close(torch.cat(rows, dim=1), y, atol=1e-6, rtol=0)


def test_kv_cache_reorder():
    cache = KVCache(max_len=4)
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    cache.update(k, k)
    cache.reorder(torch.tensor([2, 2, 0]))
    keys, _ = cache.update(torch.zeros(3, 1, 1, 2), torch.zeros(3, 1, 1, 2))
    assert keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert keys.shape == (3, 1, 3, 2)

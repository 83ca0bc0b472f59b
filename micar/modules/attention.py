"""Attention: the paper's latent attention (MDLA) in self- and cross- form, and a vanilla
multi-head ablation of the same model width.

Reference-model spec, sections 3-4. The latent form keeps three published **quirks** so the
published checkpoints load as they are: heads are split with the head index fastest (D viewed
as (dh, h)) but merged head-major; only the first half of each head's rope features is rotated
(adjacent pairs); image tokens get RoPE positions too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micar.modules.layers import RMSNorm


class KVCache:
    """Keys and values of the tokens seen so far by one self-attention layer, for decoding.

    Buffers are allocated once for ``max_len`` positions on the first update; ``reorder``
    follows beam search when it picks which hypotheses survive.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self._k: Tensor | None = None
        self._v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v [b, h, s, dh]; return every key and value so far, [b, h, length, dh]."""
        s = k.shape[2]
        if self._k is None:
            b, h, _, dh = k.shape
            self._k = k.new_empty(b, h, self.max_len, dh)
            self._v = v.new_empty(b, h, self.max_len, v.shape[-1])
        if self.length + s > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions; cannot append {s} after {self.length}"
            )
        self._k[:, :, self.length : self.length + s] = k
        self._v[:, :, self.length : self.length + s] = v
        self.length += s
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [b'] (beam search's surviving hypotheses)."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


class CrossKV(NamedTuple):
    """Image keys and values of one cross-attention layer, computed once per image."""

    k: Tensor  # [b, h, n, dh], RoPE applied
    v: Tensor  # [b, h, n, dh]


class PartialRotary(nn.Module):
    """RoPE on the first half of a head's rope features, adjacent pairs (2i, 2i+1) (**quirk**).

    ``freqs`` [rope_dim / 4] is a persistent buffer because the published checkpoints store it;
    pair i turns by ``position * freqs[i]``, freqs[i] = 10000^(-2i / (rope_dim / 2)).
    """

    def __init__(self, *, rope_dim: int, offset: int, base: float = 10000.0) -> None:
        super().__init__()
        rotated = rope_dim // 2
        self.offset = offset
        self.rotated = rotated
        self.register_buffer("freqs", base ** (-torch.arange(0, rotated, 2, dtype=torch.float32) / rotated))

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x [b, h, t, dh], positions [t] -> [b, h, t, dh] with features offset..offset+rotated turned"""
        lo, hi = self.offset, self.offset + self.rotated
        angles = positions.to(torch.float32)[:, None] * self.freqs[None, :]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        # [b, h, t, rotated] -> [b, h, t, rotated / 2, 2]: adjacent features form a pair
        pairs = x[..., lo:hi].unflatten(-1, (-1, 2))
        x0, x1 = pairs[..., 0], pairs[..., 1]
        turned = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)
        return torch.cat((x[..., :lo], turned, x[..., hi:]), dim=-1)


def split_heads_fastest(x: Tensor, num_heads: int) -> Tensor:
    """[b, t, D] -> [b, h, t, D / h]; feature f goes to head f mod h (**quirk**)."""
    b, t, D = x.shape
    # [b, t, D] -> [b, t, dh, h] -> [b, h, t, dh]
    return x.view(b, t, D // num_heads, num_heads).permute(0, 3, 1, 2)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """[b, t, D] -> [b, h, t, D / h], head-major (the usual layout)."""
    b, t, D = x.shape
    return x.view(b, t, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[b, h, t, dh] -> [b, t, h * dh], head-major."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """Scaled dot-product attention; mask (bool, True = attend) broadcasts to [b, h, t_q, t_k]."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, scale=1.0 / math.sqrt(q.shape[-1])
    )


def _positions(start: int, length: int, device: torch.device) -> Tensor:
    return torch.arange(start, start + length, device=device)


class _Attention(nn.Module):
    """Shared tail of every attention here: attention over heads, head-major merge, ``wo``."""

    num_heads: int
    dropout: float
    wo: nn.Linear

    def _output(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Heads [b, h, t, dh] -> attention -> head-major merge -> output projection [b, t, d]."""
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.wo(merge_heads(y))


class _LatentAttention(_Attention):
    """What latent self- and cross-attention share: checks, head count, partial RoPE, ``wo``."""

    def __init__(
        self,
        *,
        d_model: int,
        num_heads: int,
        d_latent: int,
        qk_nope_dim: int,
        qk_rope_dim: int,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if qk_nope_dim + qk_rope_dim != d_latent // num_heads:
            raise ValueError(
                f"qk_nope_dim + qk_rope_dim must equal d_latent / num_heads ({d_latent // num_heads})"
            )
        self.num_heads = num_heads
        self.dropout = attention_dropout
        # width of the low-rank "down" projection per q / k / v: d / h
        self.dk = d_model // num_heads
        self.rope = PartialRotary(rope_dim=qk_rope_dim, offset=qk_nope_dim)
        self.wo = nn.Linear(d_latent, d_model, bias=False)


class LatentSelfAttention(_LatentAttention):
    """Latent self-attention (the paper's MDLA, spec section 3).

    q, k, v come from one low-rank path, Up(RMSNorm(Down(x))) with Down to 3 * d/h features;
    each head's features are a "nope" part and a "rope" part, the latter partly rotated.
    """

    def __init__(
        self,
        *,
        d_model: int,
        num_heads: int,
        d_latent: int,
        qk_nope_dim: int,
        qk_rope_dim: int,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            d_model=d_model,
            num_heads=num_heads,
            d_latent=d_latent,
            qk_nope_dim=qk_nope_dim,
            qk_rope_dim=qk_rope_dim,
            attention_dropout=attention_dropout,
        )
        dk = self.dk
        self.qkv_down_norm_up = nn.Sequential(
            nn.Linear(d_model, 3 * dk, bias=False),
            RMSNorm(3 * dk),
            nn.Linear(3 * dk, 3 * d_latent, bias=False),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None, *, cache: KVCache | None = None) -> Tensor:
        """x [b, t, d], mask bool [b, 1, t, t_k] (True = attend) or None -> [b, t, d].

        With a cache, x holds the tokens after the cached ones (positions cache.length...).
        """
        start = cache.length if cache is not None else 0
        q, k, v = (split_heads_fastest(z, self.num_heads) for z in self.qkv_down_norm_up(x).chunk(3, dim=-1))
        positions = _positions(start, x.shape[1], x.device)
        q, k = self.rope(q, positions), self.rope(k, positions)
        if cache is not None:
            k, v = cache.update(k, v)
        return self._output(q, k, v, mask)


class LatentCrossAttention(_LatentAttention):
    """Latent cross-attention, text queries over image tokens (spec section 4).

    ``project_memory`` computes the image keys/values once per image so that decoding only
    projects the new text queries.
    """

    def __init__(
        self,
        *,
        d_model: int,
        num_heads: int,
        d_latent: int,
        qk_nope_dim: int,
        qk_rope_dim: int,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            d_model=d_model,
            num_heads=num_heads,
            d_latent=d_latent,
            qk_nope_dim=qk_nope_dim,
            qk_rope_dim=qk_rope_dim,
            attention_dropout=attention_dropout,
        )
        dk = self.dk
        self.q_down_norm_up = nn.Sequential(
            nn.Linear(d_model, dk, bias=False), RMSNorm(dk), nn.Linear(dk, d_latent, bias=False)
        )
        self.kv_down_norm_up = nn.Sequential(
            nn.Linear(d_model, 2 * dk, bias=False),
            RMSNorm(2 * dk),
            nn.Linear(2 * dk, 2 * d_latent, bias=False),
        )

    def project_memory(self, image: Tensor) -> CrossKV:
        """image [b, n, d] -> keys and values [b, h, n, dh] (keys rotated at positions 0..n-1)."""
        k, v = (split_heads_fastest(z, self.num_heads) for z in self.kv_down_norm_up(image).chunk(2, dim=-1))
        k = self.rope(k, _positions(0, image.shape[1], image.device))
        return CrossKV(k, v)

    def attend(self, x: Tensor, memory: CrossKV, *, start: int = 0) -> Tensor:
        """x [b, t, d] at text positions start..start+t-1 -> [b, t, d]"""
        q = split_heads_fastest(self.q_down_norm_up(x), self.num_heads)
        q = self.rope(q, _positions(start, x.shape[1], x.device))
        return self._output(q, memory.k, memory.v, None)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        """x [b, t, d], image [b, n, d] -> [b, t, d]"""
        return self.attend(x, self.project_memory(image))


class VanillaSelfAttention(_Attention):
    """Standard multi-head self-attention of width d (ablation ``attention.kind: vanilla``).

    No RoPE: positions come only from the sinusoidal text embedding.
    """

    def __init__(self, *, d_model: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = attention_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None, *, cache: KVCache | None = None) -> Tensor:
        """x [b, t, d], mask bool [b, 1, t, t_k] (True = attend) or None -> [b, t, d]"""
        q, k, v = (split_heads(z, self.num_heads) for z in self.qkv(x).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.update(k, v)
        return self._output(q, k, v, mask)


class VanillaCrossAttention(_Attention):
    """Standard multi-head cross-attention of width d (ablation ``attention.kind: vanilla``)."""

    def __init__(self, *, d_model: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = attention_dropout
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)

    def project_memory(self, image: Tensor) -> CrossKV:
        """image [b, n, d] -> keys and values [b, h, n, d / h]"""
        k, v = (split_heads(z, self.num_heads) for z in self.kv(image).chunk(2, dim=-1))
        return CrossKV(k, v)

    def attend(self, x: Tensor, memory: CrossKV, *, start: int = 0) -> Tensor:
        """x [b, t, d] -> [b, t, d] (``start`` is unused: no positions here)"""
        q = split_heads(self.q(x), self.num_heads)
        return self._output(q, memory.k, memory.v, None)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        """x [b, t, d], image [b, n, d] -> [b, t, d]"""
        return self.attend(x, self.project_memory(image))

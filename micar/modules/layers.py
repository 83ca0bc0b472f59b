"""Small building blocks: RMSNorm, activations, the SwiGLU feed-forward, the text embedding.

Reference-model spec, section 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale and no bias, computed in float32.

    The statistics are taken in float32 and the result cast back to the input dtype before the
    weight multiplies it, as the published code does (so bf16 training stays stable).
    """

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., dim] -> [..., dim]"""
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class TeLU(nn.Module):
    """TeLU activation, x * tanh(exp(x))."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.tanh(torch.exp(x))


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,  # exact erf form (approximate="none")
    "selu": nn.SELU,
    "telu": TeLU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (silu, gelu, selu, telu)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """SwiGLU-form feed-forward, w2(act(w1 x) * w3 x) followed by dropout; bias-free Linears.

    Used as the encoder FFN, as each MoE expert, and as the decoder's dense-FFN ablation.
    Because there are no biases and act(0) = 0, a zero input gives a zero output.
    """

    def __init__(self, *, d_model: int, d_ff: int, act_fn: str = "silu", dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.act = activation(act_fn)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d] -> [..., d]"""
        return self.dropout(self.w2(self.act(self.w1(x)) * self.w3(x)))


class SinusoidalPositions(nn.Module):
    """The fixed sinusoidal table (sin on even features, cos on odd, base 10000) as buffer ``pe``.

    The buffer is persistent ([1, max_len, d]) because the published checkpoints store it.
    """

    def __init__(self, *, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div[: d_model // 2])
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, length: int, start: int = 0) -> Tensor:
        """-> [1, length, d], the rows start..start+length-1"""
        if start + length > self.pe.shape[1]:
            raise ValueError(
                f"text position {start + length - 1} is past the table ({self.pe.shape[1]} = text_seq_len positions)"
            )
        return self.pe[:, start : start + length]


class TextEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d) plus sinusoidal positions, then dropout (spec section 2)."""

    def __init__(self, *, vocab_size: int, d_model: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pe = SinusoidalPositions(d_model=d_model, max_len=max_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, start: int = 0) -> Tensor:
        """input_ids [b, t] (positions start..start+t-1) -> [b, t, d]"""
        x = self.embedding(input_ids) * self.scale + self.pe(input_ids.shape[1], start)
        return self.dropout(x)

"""Text-image fusion in each decoder layer: the paper's gated fusion and a plain
cross-attention ablation (``fusion.kind: cross``).

Reference-model spec, section 5. Both take their image side pre-computed (``prepare``, once per
image) so that cached decoding projects only the new text positions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from micar.modules.attention import CrossKV
from micar.modules.layers import RMSNorm, activation


class FusionMemory(NamedTuple):
    """What one fusion layer needs from the image, computed once per image."""

    kv: CrossKV
    # [b, 1, d] global image summary of the gated form; None for the plain cross-attention form.
    summary: Tensor | None


class GatedFusion(nn.Module):
    """Gated fusion of text states with the encoded image (spec section 5).

    A cross-attention read of the image is mixed with the text states through a learned sigmoid
    gate, then fused with a global image summary (mean and max over image tokens). The output
    includes the residual ``a = CrossAttn(...) + x``; the decoder adds x once more (**quirk**).
    """

    def __init__(
        self, *, d_model: int, cross_attention: nn.Module, act_fn: str = "silu", dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.norm2 = RMSNorm(d_model)
        self.norm3 = RMSNorm(d_model)
        self.cross_attention = cross_attention
        self.global_proj = nn.Linear(2 * d_model, d_model)
        self.gate = nn.Sequential(
            nn.Linear(2 * d_model, d_model), activation(act_fn), nn.Linear(d_model, d_model), nn.Sigmoid()
        )
        self.fusion = nn.Sequential(
            nn.Linear(3 * d_model, d_model),
            activation(act_fn),
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
            nn.Dropout(dropout),
        )

    def prepare(self, image: Tensor) -> FusionMemory:
        """image [b, n, d] -> the image keys/values and the global summary [b, 1, d]"""
        image = self.norm2(image)
        pooled = torch.cat((image.mean(dim=1, keepdim=True), image.amax(dim=1, keepdim=True)), dim=-1)
        return FusionMemory(self.cross_attention.project_memory(image), self.global_proj(pooled))

    def forward(self, x: Tensor, memory: FusionMemory, *, start: int = 0) -> Tensor:
        """x [b, t, d] at text positions start..start+t-1 -> [b, t, d] (residual included)"""
        xn = self.norm1(x)
        a = self.cross_attention.attend(xn, memory.kv, start=start) + x
        an = self.norm3(a)
        gate = self.gate(torch.cat((an, xn), dim=-1))
        mixed = gate * an + (1 - gate) * xn
        summary = memory.summary.expand(-1, x.shape[1], -1)
        return self.fusion(torch.cat((mixed, an, summary), dim=-1)) + a


class CrossFusion(nn.Module):
    """Plain cross-attention in place of the gated fusion (ablation ``fusion.kind: cross``).

    Returns only the attention read; the decoder adds it to its residual stream once, so the
    block is a standard pre-norm residual cross-attention.
    """

    def __init__(self, *, d_model: int, cross_attention: nn.Module) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.norm2 = RMSNorm(d_model)
        self.cross_attention = cross_attention

    def prepare(self, image: Tensor) -> FusionMemory:
        """image [b, n, d] -> the image keys/values"""
        return FusionMemory(self.cross_attention.project_memory(self.norm2(image)), None)

    def forward(self, x: Tensor, memory: FusionMemory, *, start: int = 0) -> Tensor:
        """x [b, t, d] -> [b, t, d] (no residual)"""
        return self.cross_attention.attend(self.norm1(x), memory.kv, start=start)

"""Reusable building blocks of the MicarVLMoE captioner (reference-model spec, sections 1-6).

Shape legend for the whole package: b batch, t text length, n image tokens, d model width,
h heads, e experts, k top-k.
"""

from micar.modules.attention import (
    KVCache,
    LatentCrossAttention,
    LatentSelfAttention,
    VanillaCrossAttention,
    VanillaSelfAttention,
)
from micar.modules.fusion import CrossFusion, GatedFusion
from micar.modules.layers import FeedForward, RMSNorm, TeLU, TextEmbedding, activation
from micar.modules.moe import MixtureOfExperts, MoEOutput, Router
from micar.modules.vision import MultiScaleVisionEncoder

__all__ = [
    "CrossFusion",
    "FeedForward",
    "GatedFusion",
    "KVCache",
    "LatentCrossAttention",
    "LatentSelfAttention",
    "MixtureOfExperts",
    "MoEOutput",
    "MultiScaleVisionEncoder",
    "RMSNorm",
    "Router",
    "TeLU",
    "TextEmbedding",
    "VanillaCrossAttention",
    "VanillaSelfAttention",
    "activation",
]

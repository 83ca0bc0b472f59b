"""The MicarVLMoE captioner: vision encoder, image transformer encoder, text decoder with
fused image reads and a mixture of experts, and the vocabulary head (spec section 7).

The model exposes a small API that generation builds on: ``encode_images`` runs the vision side
once and pre-computes every decoder layer's image keys/values, and ``decode`` runs the decoder
on new tokens, optionally with a ``DecoderCache`` of self-attention keys/values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micar.config import ModelConfig
from micar.modules.attention import (
    CrossKV,
    KVCache,
    LatentCrossAttention,
    LatentSelfAttention,
    VanillaCrossAttention,
    VanillaSelfAttention,
)
from micar.modules.fusion import CrossFusion, FusionMemory, GatedFusion
from micar.modules.layers import FeedForward, RMSNorm, TextEmbedding
from micar.modules.moe import MixtureOfExperts
from micar.modules.vision import MultiScaleVisionEncoder, build_backbone


class CaptionOutput(NamedTuple):
    logits: Tensor  # [b, t, V]
    balance_loss: Tensor  # scalar, mean over decoder layers (0 for the dense decoder)
    expert_counts: Tensor  # [num_layers, e] long ([num_layers, 0] for the dense decoder)


class LossOutput(NamedTuple):
    loss: Tensor  # caption_loss + balance_coef * balance_loss
    caption_loss: Tensor  # cross-entropy over non-<pad> labels
    balance_loss: Tensor


class EncodedImages(NamedTuple):
    """Everything decoding needs from a batch of images, computed once."""

    memory: Tensor  # [b, n, d] image encoder output
    fusion: tuple[FusionMemory, ...]  # per decoder layer: image keys/values (and summary)

    def index_select(self, index: Tensor) -> EncodedImages:
        """The images at batch rows ``index`` [b'] (an image may repeat, e.g. once per beam)."""

        def rows(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.index_select(0, index)

        fusion = tuple(
            FusionMemory(CrossKV(rows(m.kv.k), rows(m.kv.v)), rows(m.summary)) for m in self.fusion
        )
        return EncodedImages(rows(self.memory), fusion)

    def repeat_interleave(self, repeats: int) -> EncodedImages:
        """Each image's rows repeated ``repeats`` times in place (b -> b * repeats), for beams."""
        index = torch.arange(self.memory.shape[0], device=self.memory.device)
        return self.index_select(index.repeat_interleave(repeats))


class DecoderCache:
    """Self-attention keys/values of every decoder layer for the tokens decoded so far."""

    def __init__(self, num_layers: int, max_len: int) -> None:
        self.layers = [KVCache(max_len) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search's surviving hypotheses)."""
        for layer in self.layers:
            layer.reorder(index)


def compute_loss(
    output: CaptionOutput, labels: Tensor, *, balance_coef: float = 0.01, pad_id: int = 0
) -> LossOutput:
    """Cross-entropy over labels [b, t] ignoring ``pad_id``, plus ``balance_coef`` * balance loss."""
    caption = F.cross_entropy(output.logits.float().flatten(0, 1), labels.flatten(), ignore_index=pad_id)
    balance = output.balance_loss.float()
    return LossOutput(caption + balance_coef * balance, caption, balance)


def _self_attention(kind: str, **kw) -> nn.Module:
    if kind == "latent":
        return LatentSelfAttention(**kw)
    return VanillaSelfAttention(
        d_model=kw["d_model"], num_heads=kw["num_heads"], attention_dropout=kw["attention_dropout"]
    )


def _cross_attention(kind: str, **kw) -> nn.Module:
    if kind == "latent":
        return LatentCrossAttention(**kw)
    return VanillaCrossAttention(
        d_model=kw["d_model"], num_heads=kw["num_heads"], attention_dropout=kw["attention_dropout"]
    )


class EncoderBlock(nn.Module):
    """Pre-norm image transformer block: x + SelfAttn(RMSNorm(x)), then x + FFN(RMSNorm(x))."""

    def __init__(self, *, d_model: int, self_attention: nn.Module, ff: nn.Module) -> None:
        super().__init__()
        self.norm_sa = RMSNorm(d_model)
        self.self_attention = self_attention
        self.norm_ff = RMSNorm(d_model)
        self.ff = ff

    def forward(self, x: Tensor) -> Tensor:
        """x [b, n, d] -> [b, n, d]"""
        x = x + self.self_attention(self.norm_sa(x))
        return x + self.ff(self.norm_ff(x))


class DecoderBlock(nn.Module):
    """Decoder block: masked self-attention, fusion with the image, then MoE (or a dense FFN).

    h = x + SelfAttn(RMSNorm(x)); h2 = h + Fusion(h, image); out = h2 + MoE(RMSNorm(h2)). With
    the gated fusion, whose output already includes h, the residual counts twice (**quirk**).
    """

    def __init__(self, *, d_model: int, self_attention: nn.Module, fusion: nn.Module, ffn: nn.Module) -> None:
        super().__init__()
        self.norm_sa = RMSNorm(d_model)
        self.self_attention = self_attention
        # Published name of the fusion block; the cross-attention ablation gets its own.
        self.fusion_name = "gated_fusion" if isinstance(fusion, GatedFusion) else "cross_fusion"
        self.add_module(self.fusion_name, fusion)
        self.norm_moe = RMSNorm(d_model)
        self.ffn_name = "moe" if isinstance(ffn, MixtureOfExperts) else "ffn"
        self.add_module(self.ffn_name, ffn)

    @property
    def fusion(self) -> nn.Module:
        return getattr(self, self.fusion_name)

    def forward(
        self,
        x: Tensor,
        memory: FusionMemory,
        mask: Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x [b, t, d] -> (hidden [b, t, d], balance loss or None, expert counts [e] or None)"""
        start = cache.length if cache is not None else 0
        h = x + self.self_attention(self.norm_sa(x), mask, cache=cache)
        h = h + self.fusion(h, memory, start=start)
        ffn = getattr(self, self.ffn_name)
        if self.ffn_name == "moe":
            routed = ffn(self.norm_moe(h))
            return h + routed.hidden, routed.balance_loss, routed.expert_counts
        return h + ffn(self.norm_moe(h)), None, None


class MicarVLMoE(nn.Module):
    """The whole captioner (spec section 7). Module names follow the published checkpoints.

    ``forward(images, input_ids, pad_mask)`` is the training call; generation uses
    ``encode_images`` once and then ``decode`` with a ``DecoderCache``.
    """

    def __init__(
        self,
        *,
        vision: MultiScaleVisionEncoder,
        vocab_size: int,
        d_v: int = 2048,
        d_model: int = 512,
        num_heads: int = 8,
        num_layers: int = 3,
        d_latent: int = 768,
        qk_nope_dim: int = 48,
        qk_rope_dim: int = 48,
        d_ff: int = 2048,
        act_fn: str = "silu",
        attention_dropout: float = 0.12,
        dropout: float = 0.1,
        text_seq_len: int = 60,
        attention_kind: Literal["latent", "vanilla"] = "latent",
        fusion_kind: Literal["gated", "cross"] = "gated",
        decoder_ffn: Literal["moe", "dense"] = "moe",
        num_experts: int = 8,
        k: int = 2,
        combine: Literal["unweighted", "weighted"] = "unweighted",
        balance_loss: Literal["entropy", "switch"] = "entropy",
    ) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0, got {vocab_size}")
        self.vocab_size = vocab_size
        self.text_seq_len = text_seq_len
        self.num_layers = num_layers
        self.num_experts = num_experts if decoder_ffn == "moe" else 0
        attn = dict(
            d_model=d_model,
            num_heads=num_heads,
            d_latent=d_latent,
            qk_nope_dim=qk_nope_dim,
            qk_rope_dim=qk_rope_dim,
            attention_dropout=attention_dropout,
        )
        ff = dict(d_model=d_model, d_ff=d_ff, act_fn=act_fn, dropout=dropout)

        self.vis_enc = vision
        self.proj = nn.Sequential(RMSNorm(d_v), nn.Linear(d_v, d_model))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            EncoderBlock(
                d_model=d_model, self_attention=_self_attention(attention_kind, **attn), ff=FeedForward(**ff)
            )
            for _ in range(num_layers)
        )
        self.text_embs = TextEmbedding(
            vocab_size=vocab_size, d_model=d_model, max_len=text_seq_len, dropout=dropout
        )

        def fusion() -> nn.Module:
            cross = _cross_attention(attention_kind, **attn)
            if fusion_kind == "gated":
                return GatedFusion(d_model=d_model, cross_attention=cross, act_fn=act_fn, dropout=dropout)
            return CrossFusion(d_model=d_model, cross_attention=cross)

        def ffn() -> nn.Module:
            if decoder_ffn == "moe":
                return MixtureOfExperts(
                    num_experts=num_experts, k=k, combine=combine, balance_loss=balance_loss, **ff
                )
            return FeedForward(**ff)

        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            DecoderBlock(
                d_model=d_model,
                self_attention=_self_attention(attention_kind, **attn),
                fusion=fusion(),
                ffn=ffn(),
            )
            for _ in range(num_layers)
        )
        self.gen_logits = nn.Sequential(RMSNorm(d_model), nn.Linear(d_model, vocab_size, bias=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform for every matrix outside the vision encoder (which keeps its weights)."""
        for name, param in self.named_parameters():
            if param.dim() > 1 and not name.startswith("vis_enc."):
                nn.init.xavier_uniform_(param)

    # ------------------------------------------------------------------ image side

    def encode_tokens(self, tokens: Tensor) -> EncodedImages:
        """Vision tokens [b, n, d_v] -> encoder output and every decoder layer's image memory."""
        x = self.proj(tokens)
        for layer in self.encoder.layers:
            x = layer(x)
        return EncodedImages(x, tuple(layer.fusion.prepare(x) for layer in self.decoder.layers))

    def encode_stages(self, stages: Sequence[Tensor]) -> EncodedImages:
        """Backbone stage maps C2..C5 -> EncodedImages (the model after its backbone)."""
        return self.encode_tokens(self.vis_enc.forward_stages(stages))

    def encode_images(self, images: Tensor) -> EncodedImages:
        """images [b, 3, H, W] -> EncodedImages"""
        return self.encode_tokens(self.vis_enc(images))

    # ------------------------------------------------------------------ text side

    def new_cache(self, max_len: int | None = None) -> DecoderCache:
        """An empty decoder cache for up to ``max_len`` (default text_seq_len) positions."""
        return DecoderCache(self.num_layers, max_len or self.text_seq_len)

    def decode(
        self,
        input_ids: Tensor,
        encoded: EncodedImages,
        pad_mask: Tensor | None = None,
        *,
        cache: DecoderCache | None = None,
    ) -> CaptionOutput:
        """input_ids [b, t] -> CaptionOutput (logits [b, t, V]).

        pad_mask [b, t_k] (nonzero = real token; t_k = tokens cached + t) masks keys; None masks
        none (as the published decoding does). With a cache, input_ids are the tokens after the
        cached ones and the cache grows by t.
        """
        b, t = input_ids.shape
        start = cache.length if cache is not None else 0
        x = self.text_embs(input_ids, start)
        mask = None
        if t > 1 or pad_mask is not None:
            keys = torch.arange(start + t, device=input_ids.device)
            queries = torch.arange(start, start + t, device=input_ids.device)
            # [t, t_k] causal, then [b, 1, t, t_k] with key padding
            mask = (keys[None, :] <= queries[:, None])[None, None]
            if pad_mask is not None:
                mask = mask & pad_mask.bool()[:, None, None, :]
                # A query with no visible key (a leading <pad>) attends everywhere instead of NaN.
                mask = mask | ~mask.any(dim=-1, keepdim=True)
        balances, counts = [], []
        for i, layer in enumerate(self.decoder.layers):
            x, balance, count = layer(
                x, encoded.fusion[i], mask, cache=cache.layers[i] if cache is not None else None
            )
            balances.append(balance)
            counts.append(count)
        logits = self.gen_logits(x)
        if self.num_experts:
            return CaptionOutput(logits, torch.stack(balances).mean(), torch.stack(counts))
        zero = logits.new_zeros(())
        return CaptionOutput(
            logits, zero, torch.zeros(self.num_layers, 0, dtype=torch.long, device=logits.device)
        )

    def forward(self, images: Tensor, input_ids: Tensor, pad_mask: Tensor | None = None) -> CaptionOutput:
        """images [b, 3, H, W], input_ids [b, t], pad_mask [b, t] -> CaptionOutput"""
        return self.decode(input_ids, self.encode_images(images), pad_mask)

    def forward_stages(
        self, stages: Sequence[Tensor], input_ids: Tensor, pad_mask: Tensor | None = None
    ) -> CaptionOutput:
        """The model after its backbone: stage maps C2..C5 instead of images -> CaptionOutput"""
        return self.decode(input_ids, self.encode_stages(stages), pad_mask)


def build_model(cfg: ModelConfig, *, load_pretrained: bool = True) -> MicarVLMoE:
    """The captioner described by ``cfg`` (vocab_size must be filled in from the tokenizer).

    ``load_pretrained=False`` skips ``vision.pretrained_path`` (when the weights come from a
    checkpoint anyway).
    """
    if cfg.vocab_size <= 0:
        raise ValueError(
            "model.vocab_size must be > 0 to build the model; set it from the tokenizer "
            "(len(tokenizer)) or pass model.vocab_size=<V>"
        )
    vision_cfg = cfg.vision
    backbone = build_backbone(
        vision_cfg.backbone,
        num_stages=4 if vision_cfg.kind == "msve" else 1,
        pretrained_path=vision_cfg.pretrained_path if load_pretrained else None,
    )
    vision = MultiScaleVisionEncoder(
        backbone=backbone,
        stage_channels=backbone.feature_info.channels(),
        d_v=cfg.d_v,
        grid=vision_cfg.grid,
        kind=vision_cfg.kind,
        freeze_backbone=vision_cfg.freeze_backbone,
    )
    return MicarVLMoE(
        vision=vision,
        vocab_size=cfg.vocab_size,
        d_v=cfg.d_v,
        d_model=cfg.d_model,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_layers,
        d_latent=cfg.d_latent,
        qk_nope_dim=cfg.qk_nope_dim,
        qk_rope_dim=cfg.qk_rope_dim,
        d_ff=cfg.d_ff,
        act_fn=cfg.act_fn,
        attention_dropout=cfg.attention_dropout,
        dropout=cfg.dropout,
        text_seq_len=cfg.text_seq_len,
        attention_kind=cfg.attention.kind,
        fusion_kind=cfg.fusion.kind,
        decoder_ffn=cfg.decoder.ffn,
        num_experts=cfg.moe.num_experts,
        k=cfg.moe.k,
        combine=cfg.moe.combine,
        balance_loss=cfg.moe.balance_loss,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CaptionOutput",
    "DecoderCache",
    "EncodedImages",
    "LossOutput",
    "MicarVLMoE",
    "build_model",
    "compute_loss",
    "count_parameters",
]

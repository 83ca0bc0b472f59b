"""micar.modules.layers: RMSNorm, activations, SwiGLU FFN, text embedding (golden parity)."""

from __future__ import annotations

import math

import pytest
import torch
from golden import golden, needs_golden

from micar.modules.layers import FeedForward, RMSNorm, TeLU, TextEmbedding, activation


@needs_golden
def test_rmsnorm_matches_published():
    cfg, params, inputs, outputs = golden("rmsnorm")
    norm = RMSNorm(cfg["d"], eps=cfg["eps"])
    norm.load_state_dict(params)
    torch.testing.assert_close(norm(inputs["x"]), outputs["y"], atol=1e-5, rtol=0)


@needs_golden
def test_telu_matches_published():
    _, _, inputs, outputs = golden("telu")
    torch.testing.assert_close(TeLU()(inputs["x"]), outputs["y"], atol=1e-5, rtol=0)


@needs_golden
@pytest.mark.parametrize("act", ["silu", "gelu", "selu", "telu"])
def test_ffn_matches_published(act):
    cfg, params, inputs, outputs = golden(f"ffn_{act}")
    ffn = FeedForward(d_model=cfg["d_model"], d_ff=cfg["d_ff"], act_fn=cfg["act_fn"]).eval()
    ffn.load_state_dict(params)
    torch.testing.assert_close(ffn(inputs["x"]), outputs["y"], atol=1e-5, rtol=0)


def test_rmsnorm_values_and_bf16():
    x = torch.tensor([[3.0, 4.0]])
    norm = RMSNorm(2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0]))
    rms = math.sqrt((9 + 16) / 2 + 1e-6)
    torch.testing.assert_close(norm(x), torch.tensor([[3 / rms, 8 / rms]]))
    y = norm.bfloat16()(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), torch.tensor([[3 / rms, 8 / rms]]), atol=2e-2, rtol=0)


def test_activations():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(activation("telu")(x), x * torch.tanh(torch.exp(x)))
    torch.testing.assert_close(activation("gelu")(x), 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    torch.testing.assert_close(activation("silu")(x), x * torch.sigmoid(x))
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        activation("relu6")


def test_ffn_zero_in_zero_out():
    torch.manual_seed(0)
    for act in ("silu", "gelu", "selu", "telu"):
        ffn = FeedForward(d_model=8, d_ff=16, act_fn=act)
        assert torch.equal(ffn(torch.zeros(3, 8)), torch.zeros(3, 8))


def test_text_embedding():
    torch.manual_seed(0)
    emb = TextEmbedding(vocab_size=10, d_model=8, max_len=6).eval()
    ids = torch.tensor([[1, 4, 2]])
    pe = emb.pe.pe[0]
    assert pe.shape == (6, 8)
    torch.testing.assert_close(pe[2, 0], torch.tensor(math.sin(2.0)))
    torch.testing.assert_close(pe[2, 1], torch.tensor(math.cos(2.0)))
    torch.testing.assert_close(pe[3, 2], torch.tensor(math.sin(3 / 10000 ** (2 / 8))))
    expected = emb.embedding.weight[ids] * math.sqrt(8) + pe[:3]
    torch.testing.assert_close(emb(ids), expected)
    # starting at a later position picks the later rows of the table
    torch.testing.assert_close(emb(ids[:, 2:], start=2), expected[:, 2:])
    with pytest.raises(ValueError, match="past the table"):
        emb(torch.ones(1, 7, dtype=torch.long))


@needs_golden
def test_position_table_matches_published():
    _, params, _, _ = golden("model_after_backbone")
    published = params["text_embs.pe.pe"]
    emb = TextEmbedding(vocab_size=50, d_model=published.shape[-1], max_len=published.shape[1])
    torch.testing.assert_close(emb.pe.pe, published, atol=1e-5, rtol=0)

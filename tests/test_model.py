"""micar.model: the whole captioner (golden parity after the backbone), every ablation, masks,
loss, router gradients, and the decoder step API (the covctr size is checked in test_reference)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from golden import GOLDEN, needs_golden
from safetensors import safe_open
from safetensors.torch import load_file
from tiny import TINY_MODEL

from micar.config import ModelConfig, config_from_dict
from micar.model import CaptionOutput, MicarVLMoE, build_model, compute_loss

TINY = {**TINY_MODEL, "attention_dropout": 0.0, "dropout": 0.0}


def tiny_config(**overrides) -> ModelConfig:
    model = {**TINY, **overrides}
    for key in ("vision", "moe", "attention", "fusion", "decoder"):
        if key in overrides and key in TINY:
            model[key] = {**TINY[key], **overrides[key]}
    return config_from_dict({"model": model}).model


def tiny_model(seed: int = 0, **overrides) -> MicarVLMoE:
    torch.manual_seed(seed)
    return build_model(tiny_config(**overrides)).eval()


def golden_model() -> tuple[MicarVLMoE, dict, dict, dict]:
    """The published model after its backbone, loaded with the golden parameters."""
    path = GOLDEN / "model_after_backbone.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        c = json.loads(fh.metadata()["config"])
    cfg = config_from_dict(
        {
            "model": {
                **{k: c[k] for k in ("d_v", "num_heads", "num_layers", "d_model", "d_latent", "qk_nope_dim")},
                **{k: c[k] for k in ("qk_rope_dim", "d_ff", "act_fn", "text_seq_len", "vocab_size")},
                # resnet26 has the ResNet-101 stage widths (256..2048); its weights are not used
                "vision": {"backbone": "resnet26"},
                "moe": {"num_experts": c["num_experts"], "k": c["k"]},
            }
        }
    ).model
    model = build_model(cfg).eval()
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    state = model.state_dict()
    after_backbone = {k for k in state if not k.startswith("vis_enc.backbone.")}
    # The published names are this model's names: the mapping is the identity here.
    assert after_backbone == set(params)
    state.update(params)
    model.load_state_dict(state)
    inputs = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    outputs = {k[4:]: v for k, v in tensors.items() if k.startswith("out.")}
    return model, c, inputs, outputs


@needs_golden
def test_model_after_backbone_matches_published():
    model, _, inputs, outputs = golden_model()
    stages = [inputs[f"c{i}"] for i in (2, 3, 4, 5)]
    with torch.no_grad():
        out = model.forward_stages(stages, inputs["input_ids"], inputs["pad_mask"])
    assert isinstance(out, CaptionOutput)
    torch.testing.assert_close(out.logits, outputs["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.balance_loss, outputs["balance_loss"].reshape(()), atol=1e-5, rtol=0)
    assert out.expert_counts.shape == (2, 4) and out.expert_counts.dtype == torch.long
    assert out.expert_counts.sum(dim=1).tolist() == [2 * 20 * 2] * 2  # pads are routed too


ABLATIONS = list(
    itertools.product(
        ["msve", "last_stage"],
        ["latent", "vanilla"],
        ["gated", "cross"],
        ["moe", "dense"],
        ["unweighted", "weighted"],
        ["entropy", "switch"],
    )
)


@pytest.mark.parametrize("vision,attention,fusion,ffn,combine,balance", ABLATIONS)
def test_every_ablation_builds_and_runs(vision, attention, fusion, ffn, combine, balance):
    model = tiny_model(
        vision={"kind": vision},
        attention={"kind": attention},
        fusion={"kind": fusion},
        decoder={"ffn": ffn},
        moe={"combine": combine, "balance_loss": balance},
    ).train()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, 11, (2, 7))
    out = model(images, ids, ids != 0)
    assert out.logits.shape == (2, 7, 11)
    assert out.balance_loss.shape == ()
    assert torch.isfinite(out.logits).all()
    if ffn == "moe":
        assert out.expert_counts.shape == (2, 4)
        assert out.expert_counts.sum().item() == 2 * 2 * 7 * 2
    else:
        assert out.expert_counts.shape == (2, 0)
        assert out.balance_loss.item() == 0.0
    compute_loss(out, ids).loss.backward()
    assert model.gen_logits[1].weight.grad is not None


@pytest.mark.parametrize("attention", ["latent", "vanilla"])
def test_causality(attention):
    model = tiny_model(attention={"kind": attention})
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, 11, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = torch.randint(4, 11, (2, 3))
    with torch.no_grad():
        a, b = model(images, ids).logits, model(images, changed).logits
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)


def test_padding_is_masked():
    model = tiny_model()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[1, 5, 6, 2, 0, 0, 0], [1, 7, 8, 9, 10, 2, 0]])
    pad_mask = ids != 0
    changed = ids.clone()
    changed[~pad_mask] = 9  # different tokens where the mask says <pad>
    with torch.no_grad():
        a, b = model(images, ids, pad_mask).logits, model(images, changed, pad_mask).logits
    torch.testing.assert_close(a[pad_mask], b[pad_mask], atol=1e-6, rtol=0)


def test_images_matter_and_batch_rows_are_independent():
    model = tiny_model()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, 11, (2, 6))
    with torch.no_grad():
        both = model(images, ids).logits
        first = model(images[:1], ids[:1]).logits
        other = model(images.flip(0), ids).logits
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)
    assert not torch.allclose(both[0], other[0])


def test_loss_helper():
    model = tiny_model()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
    labels = torch.tensor([[5, 6, 2, 0, 0], [7, 8, 9, 2, 0]])
    out = model(images, ids, ids != 0)
    loss = compute_loss(out, labels, balance_coef=0.5)
    logp = torch.log_softmax(out.logits, dim=-1)
    keep = labels != 0
    ce = -logp.gather(-1, labels[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(loss.caption_loss, ce)
    torch.testing.assert_close(loss.loss, ce + 0.5 * out.balance_loss)


@pytest.mark.parametrize("combine", ["unweighted", "weighted"])
def test_router_learns_from_caption_loss_only_when_weighted(combine):
    model = tiny_model(moe={"combine": combine}).train()
    ids = torch.randint(4, 11, (2, 6))
    out = model(torch.randn(2, 3, 32, 32), ids)
    compute_loss(out, ids, balance_coef=0.0).loss.backward()
    for layer in model.decoder.layers:
        grad = layer.moe.gate.gate.weight.grad
        if combine == "unweighted":
            assert grad is None or torch.count_nonzero(grad) == 0
        else:
            assert grad is not None and grad.abs().sum() > 0


def test_init_is_xavier_outside_the_vision_encoder():
    model = tiny_model()
    w = model.decoder.layers[0].self_attention.wo.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    emb = model.text_embs.embedding.weight
    assert emb.abs().max() <= (6 / sum(emb.shape)) ** 0.5
    # norms keep their ones
    assert torch.equal(model.decoder.layers[0].norm_sa.weight, torch.ones(16))


def test_vocab_size_must_be_known():
    with pytest.raises(ValueError, match="model.vocab_size must be > 0"):
        build_model(tiny_config(vocab_size=0))


def test_decoder_step_api_matches_full_forward():
    model = tiny_model()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(4, 11, (2, 7))
    with torch.no_grad():
        full = model(images, ids).logits
        encoded = model.encode_images(images)
        cache = model.new_cache(max_len=7)
        # a prefix of three tokens at once, then one token per step
        steps = [model.decode(ids[:, :3], encoded, cache=cache).logits]
        steps += [model.decode(ids[:, i : i + 1], encoded, cache=cache).logits for i in range(3, 7)]
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    # beams: each image repeated, rows independent
    twice = encoded.repeat_interleave(2)
    with torch.no_grad():
        logits = model.decode(ids.repeat_interleave(2, dim=0), twice).logits
    torch.testing.assert_close(logits[::2], full, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1::2], full, atol=1e-5, rtol=0)


def test_leading_pad_gives_no_nan():
    model = tiny_model().train()
    ids = torch.tensor([[0, 5, 6, 2], [1, 7, 2, 0]])
    out = model(torch.randn(2, 3, 32, 32), ids, ids != 0)
    assert torch.isfinite(out.logits).all()
    compute_loss(out, ids).loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())

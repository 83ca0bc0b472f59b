"""micar.generation: greedy parity with the published decoding, cached == uncached, and beam
search against exhaustive enumeration."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from golden import GOLDEN, needs_golden
from safetensors import safe_open
from safetensors.torch import load_file
from tiny import TINY_MODEL

from micar.config import config_from_dict
from micar.generation import beam_search, eval_mode, generate, greedy_search
from micar.model import MicarVLMoE, build_model

EOS = 2


def tiny_model(seed: int = 0, vocab_size: int = 11, text_seq_len: int = 12, **model) -> MicarVLMoE:
    torch.manual_seed(seed)
    cfg = {
        **TINY_MODEL,
        "text_seq_len": text_seq_len,
        "vocab_size": vocab_size,
        **model,
    }
    return build_model(config_from_dict({"model": cfg}).model).eval()


@needs_golden
def test_greedy_reproduces_published_decoding():
    path = GOLDEN / "model_after_backbone.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        c = json.loads(fh.metadata()["config"])
    cfg = {k: c[k] for k in ("d_v", "num_heads", "num_layers", "d_model", "d_latent", "qk_nope_dim")}
    cfg.update({k: c[k] for k in ("qk_rope_dim", "d_ff", "act_fn", "text_seq_len", "vocab_size")})
    cfg.update(vision={"backbone": "resnet26"}, moe={"num_experts": c["num_experts"], "k": c["k"]})
    model = build_model(config_from_dict({"model": cfg}).model)
    state = model.state_dict()
    state.update({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
    model.load_state_dict(state)
    encoded = model.eval().encode_stages([tensors[f"in.c{i}"] for i in (2, 3, 4, 5)])
    published = tensors["out.published_decoding"]
    ours = generate(model, encoded, max_len=c["max_len"], beam_size=1)
    for row, ref in zip(ours.tolist(), published[:, 1:].tolist(), strict=True):
        cut = ref.index(EOS) + 1 if EOS in ref else len(ref)
        assert row[:cut] == ref[:cut]
    uncached = generate(model, encoded, max_len=c["max_len"], beam_size=1, use_cache=False)
    assert torch.equal(ours, uncached)


@pytest.mark.parametrize("beam_size", [1, 2, 4])
@pytest.mark.parametrize("attention", ["latent", "vanilla"])
def test_cached_equals_uncached(beam_size, attention):
    model = tiny_model(seed=3, attention={"kind": attention})
    images = torch.randn(3, 3, 32, 32)
    a = generate(model, images, max_len=10, beam_size=beam_size)
    b = generate(model, images, max_len=10, beam_size=beam_size, use_cache=False)
    assert torch.equal(a, b)
    if beam_size > 1:
        with eval_mode(model):
            encoded = model.encode_images(images)
            sa = beam_search(model, encoded, max_len=10, beam_size=beam_size)
            sb = beam_search(model, encoded, max_len=10, beam_size=beam_size, use_cache=False)
        torch.testing.assert_close(sa.scores, sb.scores, atol=1e-5, rtol=0)


def test_output_format_and_mode_restored():
    model = tiny_model(seed=1).train()
    images = torch.randn(4, 3, 32, 32)
    out = generate(model, images, max_len=9, beam_size=3)
    assert model.training and model.vis_enc.backbone.training
    assert out.dtype == torch.long and out.shape[0] == 4 and out.shape[1] <= 9
    for row in out.tolist():
        if EOS in row:
            assert all(t == 0 for t in row[row.index(EOS) + 1 :])
    with pytest.raises(ValueError, match="max_len must be in"):
        generate(model, images, max_len=13)


def test_greedy_is_argmax_of_full_forward():
    model = tiny_model(seed=2)
    images = torch.randn(2, 3, 32, 32)
    out = generate(model, images, max_len=6, use_cache=False)
    with torch.no_grad():
        ids = torch.ones(2, 1, dtype=torch.long)
        for _ in range(out.shape[1]):
            nxt = model(images, ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat((ids, nxt), dim=1)
    expected = ids[:, 1:]
    for row, ref in zip(out.tolist(), expected.tolist(), strict=True):
        cut = ref.index(EOS) + 1 if EOS in ref else len(ref)
        assert row[:cut] == ref[:cut]


def exhaustive_best(
    model, encoded, max_len: int, vocab: int, length_penalty: float
) -> tuple[float, list[int]]:
    """The best hypothesis of one image by enumerating every sequence (scored like beam search)."""
    best = (float("-inf"), [])
    logp_cache: dict[tuple[int, ...], torch.Tensor] = {}
    non_eos = [t for t in range(vocab) if t != EOS]

    def next_logp(prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix not in logp_cache:
            ids = torch.tensor([[1, *prefix]])
            logits = model.decode(ids, encoded).logits[0, -1]
            logp_cache[prefix] = torch.log_softmax(logits.float(), dim=-1)
        return logp_cache[prefix]

    for length in range(max_len):
        for prefix in itertools.product(non_eos, repeat=length):
            raw = sum(float(next_logp(prefix[:i])[t]) for i, t in enumerate(prefix))
            # ends here with <eos>
            end = raw + float(next_logp(prefix)[EOS])
            best = max(best, (end / (length + 1) ** length_penalty, [*prefix, EOS]))
            if length == max_len - 1:
                # or runs out of length with a last non-<eos> token
                for t in non_eos:
                    score = (raw + float(next_logp(prefix)[t])) / max_len**length_penalty
                    best = max(best, (score, [*prefix, t]))
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed,max_len", [(7, 3), (8, 4)])
def test_beam_search_finds_the_best_sequence(length_penalty, seed, max_len):
    vocab = 5
    model = tiny_model(seed=seed, vocab_size=vocab, text_seq_len=max_len + 1)
    images = torch.randn(2, 3, 32, 32)
    with eval_mode(model):
        encoded = model.encode_images(images)
        # wide enough to hold every live prefix: the search is then exact
        wide = beam_search(
            model,
            encoded,
            max_len=max_len,
            beam_size=(vocab - 1) ** (max_len - 1),
            length_penalty=length_penalty,
        )
        narrow = beam_search(model, encoded, max_len=max_len, beam_size=2, length_penalty=length_penalty)
        for i in range(2):
            one = encoded.index_select(torch.tensor([i]))
            score, seq = exhaustive_best(model, one, max_len, vocab, length_penalty)
            assert abs(float(wide.scores[i]) - score) < 1e-5
            got = wide.sequences[i].tolist()
            got = got[: got.index(EOS) + 1] if EOS in got else got
            assert got == seq
            assert float(narrow.scores[i]) <= score + 1e-5


def test_beam_beats_or_ties_greedy_under_its_own_score():
    model = tiny_model(seed=11)
    images = torch.randn(3, 3, 32, 32)
    with eval_mode(model):
        encoded = model.encode_images(images)
        greedy = greedy_search(model, encoded, max_len=8)
        beam = beam_search(model, encoded, max_len=8, beam_size=4, length_penalty=1.0)
        for i in range(3):
            row = greedy[i].tolist()
            row = row[: row.index(EOS) + 1] if EOS in row else row
            ids = torch.tensor([[1, *row]])
            one = encoded.index_select(torch.tensor([i]))
            logp = torch.log_softmax(model.decode(ids[:, :-1], one).logits[0], dim=-1)
            greedy_score = logp.gather(1, ids[0, 1:, None]).sum() / len(row)
            assert float(beam.scores[i]) >= float(greedy_score) - 1e-5

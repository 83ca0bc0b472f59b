"""micar.checkpoint: save/load round trip (identical logits), atomic replacement, errors."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import micar
import micar.checkpoint as checkpoint
from micar.checkpoint import load_checkpoint, save_checkpoint
from micar.config import config_from_dict
from micar.model import build_model
from micar.text.tokenizer import make_tokenizer

WORDS = ["a", "b", "c", "lesion", "left", "right", "no"]


TINY = {
    "d_v": 16,
    "num_heads": 2,
    "num_layers": 1,
    "d_model": 16,
    "d_latent": 24,
    "qk_nope_dim": 4,
    "qk_rope_dim": 8,
    "d_ff": 32,
    "text_seq_len": 8,
    "vision": {"backbone": "test_resnet", "grid": 2},
    "moe": {"num_experts": 3, "k": 2, "combine": "weighted"},
}


def tiny(seed: int, vocab_size: int):
    """A tiny model with ``vocab_size`` tokens, and a run config whose vocab_size is still 0."""
    torch.manual_seed(seed)
    model = build_model(config_from_dict({"model": {**TINY, "vocab_size": vocab_size}}).model).eval()
    return model, config_from_dict({"preset": "tiny", "model": TINY})


@pytest.fixture
def tokenizer():
    vocab = {"<pad>": 0, "<sos>": 1, "<eos>": 2, "<unk>": 3}
    vocab.update({w: i + 4 for i, w in enumerate(WORDS)})
    return make_tokenizer(vocab)


def logits(model, seed: int = 0):
    torch.manual_seed(seed)
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        return model(images, ids, ids != 0).logits


def test_round_trip_gives_identical_logits(tmp_path, tokenizer):
    model, cfg = tiny(0, 11)
    # non-trivial BatchNorm statistics must survive too
    model.train()(torch.randn(2, 3, 32, 32), torch.ones(2, 3, dtype=torch.long))
    model.eval()
    out = save_checkpoint(tmp_path / "ckpt", model, tokenizer, cfg)
    assert sorted(p.name for p in out.iterdir()) >= [
        "config.yaml",
        "id2token.json",
        "model.safetensors",
        "token2id.json",
    ]
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert fh.metadata()["format"] == "micar"
    loaded, tok, loaded_cfg = micar.load_checkpoint(out)
    assert loaded_cfg.model.vocab_size == 11 and loaded_cfg.preset == "tiny"
    assert not loaded.training
    assert tok.get_vocab() == tokenizer.get_vocab()
    assert torch.equal(logits(model), logits(loaded))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_replacing_a_checkpoint_is_atomic(tmp_path, tokenizer, monkeypatch):
    first, cfg = tiny(0, 11)
    second, _ = tiny(1, 11)
    target = tmp_path / "ckpt"
    save_checkpoint(target, first, tokenizer, cfg)
    save_checkpoint(target, second, tokenizer, cfg)
    assert torch.equal(logits(load_checkpoint(target)[0]), logits(second))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or old dirs left

    # a save that dies half-way leaves the previous checkpoint whole and no debris
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "dump_config", boom)
    third, _ = tiny(2, 11)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, third, tokenizer, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert torch.equal(logits(load_checkpoint(target)[0]), logits(second))


def test_vocabulary_mismatch_writes_nothing(tmp_path, tokenizer):
    model, cfg = tiny(0, 12)
    with pytest.raises(ValueError, match="tokenizer has 11 tokens"):
        save_checkpoint(tmp_path / "ckpt", model, tokenizer, cfg)
    assert not any(tmp_path.iterdir())


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path / "empty")

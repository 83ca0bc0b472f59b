"""micar.reference: published checkpoints -> this model (strict key/shape mapping), presets,
and the ``micar import-reference`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from micar.cli import main as cli_main
from micar.config import ConfigError
from micar.model import build_model, count_parameters
from micar.reference import (
    available_presets,
    import_reference,
    load_preset,
    load_reference_checkpoint,
    native_to_published,
    published_to_native,
    to_published_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
WORDS = ["a", "b", "c", "d", "lesion", "left"]
# a published-layout model at tiny widths; resnet18 keeps the torchvision ResNet stem names
TINY = {
    "model.num_layers": 1,
    "model.d_v": 16,
    "model.d_model": 16,
    "model.num_heads": 2,
    "model.d_latent": 24,
    "model.qk_nope_dim": 4,
    "model.qk_rope_dim": 8,
    "model.d_ff": 32,
    "model.text_seq_len": 8,
    "model.vision.backbone": "resnet18",
    "model.moe.num_experts": 3,
}


@pytest.fixture
def vocab_files(tmp_path) -> tuple[Path, Path]:
    t2i = {"<pad>": 0, "<sos>": 1, "<eos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    (tmp_path / "token2id.json").write_text(json.dumps(t2i))
    (tmp_path / "id2token.json").write_text(json.dumps({str(i): t for t, i in t2i.items()}))
    return tmp_path / "token2id.json", tmp_path / "id2token.json"


def random_published_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the published names, shaped like the tiny model's."""
    cfg = load_preset("covctr", {**TINY, "model.vocab_size": 10})
    reference = to_published_state_dict(build_model(cfg.model))
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in reference.items():
        if value.dtype == torch.long:
            out[key] = torch.randint(0, 100, value.shape, generator=gen)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen)
    return out


def write_snapshot(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "model_snapshot.pth"
    torch.save({"model": state}, path)
    return path


def test_key_mapping():
    assert published_to_native("vis_enc.layer1.0.weight") == "vis_enc.backbone.conv1.weight"
    assert published_to_native("vis_enc.layer1.1.running_mean") == "vis_enc.backbone.bn1.running_mean"
    assert published_to_native("vis_enc.layer1.4.2.conv3.weight") == "vis_enc.backbone.layer1.2.conv3.weight"
    assert published_to_native("vis_enc.layer4.0.0.downsample.0.weight") == (
        "vis_enc.backbone.layer4.0.downsample.0.weight"
    )
    assert published_to_native("vis_enc.fpn_c2.0.weight") == "vis_enc.fpn_c2.0.weight"
    assert (
        published_to_native("decoder.layers.1.moe.gate.gate.weight")
        == "decoder.layers.1.moe.gate.gate.weight"
    )
    for key in ("vis_enc.layer3.0.5.bn2.weight", "gen_logits.1.weight", "vis_enc.layer1.1.weight"):
        assert native_to_published(published_to_native(key)) == key


def test_published_state_round_trips_through_the_importer(tmp_path, vocab_files):
    state = random_published_state()
    snapshot = write_snapshot(tmp_path, state)
    model, tokenizer = load_reference_checkpoint(snapshot, *vocab_files, TINY, preset="covctr")
    assert len(tokenizer.get_vocab()) == 10 and model.vocab_size == 10
    assert not model.training
    landed = to_published_state_dict(model)
    assert set(landed) == set(state)
    for key, value in state.items():
        assert torch.equal(landed[key], value), key


def test_overrides_as_keywords(tmp_path, vocab_files):
    snapshot = write_snapshot(tmp_path, random_published_state())
    model, _ = load_reference_checkpoint(snapshot, *vocab_files, preset="covctr", **TINY)
    assert model.num_layers == 1


def test_missing_key_is_named(tmp_path, vocab_files):
    state = random_published_state()
    del state["decoder.layers.0.gated_fusion.norm3.weight"]
    with pytest.raises(ValueError, match=r"missing key 'decoder\.layers\.0\.gated_fusion\.norm3\.weight'"):
        load_reference_checkpoint(write_snapshot(tmp_path, state), *vocab_files, TINY)


def test_wrong_shape_is_named(tmp_path, vocab_files):
    state = random_published_state()
    state["vis_enc.layer1.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"'vis_enc\.layer1\.0\.weight' has shape \(3, 3\)"):
        load_reference_checkpoint(write_snapshot(tmp_path, state), *vocab_files, TINY)


def test_unexpected_key_is_named(tmp_path, vocab_files):
    state = random_published_state()
    state["decoder.layers.5.norm_sa.weight"] = torch.ones(16)
    with pytest.raises(ValueError, match=r"unexpected key 'decoder\.layers\.5\.norm_sa\.weight'"):
        load_reference_checkpoint(write_snapshot(tmp_path, state), *vocab_files, TINY)


def test_vocabulary_size_comes_from_token2id(tmp_path, vocab_files):
    state = random_published_state()
    state["gen_logits.1.weight"] = torch.zeros(12, 16)
    with pytest.raises(ValueError, match=r"gen_logits\.1\.weight"):
        load_reference_checkpoint(write_snapshot(tmp_path, state), *vocab_files, TINY)


def test_unknown_preset_lists_the_available_ones(tmp_path, vocab_files):
    with pytest.raises(ValueError, match="unknown preset 'nope'") as err:
        load_reference_checkpoint(tmp_path / "x.pth", *vocab_files, preset="nope")
    for name in ("covctr", "mmretinal", "pgross", "roco"):
        assert name in str(err.value)


def test_bad_override_is_a_config_error(tmp_path, vocab_files):
    with pytest.raises(ConfigError, match="model.num_layerz"):
        load_reference_checkpoint(tmp_path / "x.pth", *vocab_files, {"model.num_layerz": 2})


def test_import_reference_command(tmp_path, vocab_files):
    from micar.checkpoint import load_checkpoint

    state = random_published_state(seed=4)
    snapshot = write_snapshot(tmp_path, state)
    out = tmp_path / "native"
    args = ["import-reference", "--snapshot", str(snapshot), "--token2id", str(vocab_files[0])]
    args += ["--id2token", str(vocab_files[1]), "--preset", "covctr", "--out", str(out)]
    args += [f"{k}={v}" for k, v in TINY.items()]
    assert cli_main(args) == 0
    model, tokenizer, cfg = load_checkpoint(out)
    assert cfg.preset == "covctr" and cfg.model.vocab_size == 10 and cfg.model.num_layers == 1
    imported, _, _ = import_reference(snapshot, *vocab_files, TINY)
    torch.manual_seed(0)
    images, ids = torch.randn(1, 3, 32, 32), torch.tensor([[1, 5, 6, 2]])
    with torch.no_grad():
        assert torch.equal(model(images, ids).logits, imported(images, ids).logits)


@pytest.mark.parametrize("name", ["covctr", "mmretinal", "pgross", "roco"])
def test_presets_load_validate_and_build(name):
    text = (REPO / "tune_configs" / f"{name}.yaml").read_text()
    assert text.startswith("#") and f"micar train --config tune_configs/{name}.yaml" in text
    cfg = load_preset(name)
    assert cfg.preset == name and cfg.data.dataset == name
    assert cfg.data.prepared_dir == f"data/prepared/{name}"
    assert cfg.eval.beam_size == 3 and cfg.train.lr == 1e-4 and cfg.train.v_lr == 5e-5
    assert (cfg.model.d_model, cfg.model.d_latent, cfg.model.d_v, cfg.model.moe.num_experts) == (
        512,
        768,
        2048,
        8,
    )
    expected = {
        "covctr": (2, "silu", 80),
        "mmretinal": (3, "gelu", 60),
        "pgross": (3, "silu", 30),
        "roco": (3, "silu", 60),
    }
    assert (cfg.model.num_layers, cfg.model.act_fn, cfg.model.text_seq_len) == expected[name]
    tiny = load_preset(name, {**TINY, "model.vocab_size": 10, "model.vision.backbone": "test_resnet"})
    model = build_model(tiny.model).eval()
    assert model(torch.randn(1, 3, 32, 32), torch.tensor([[1, 4]])).logits.shape == (1, 2, 10)
    assert name in available_presets()


@pytest.mark.slow
def test_covctr_published_layout_size():
    cfg = load_preset("covctr", {"model.vocab_size": 229})
    model = build_model(cfg.model)
    state = to_published_state_dict(model)
    assert len(state) == 792
    assert round(count_parameters(model) / 1e6, 1) == 156.0
    assert "vis_enc.layer1.4.0.conv1.weight" in state and "vis_enc.layer4.0.2.bn3.running_var" in state

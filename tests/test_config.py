"""micar.config: YAML loading, dotted overrides, validation errors that name key and file."""

from pathlib import Path

import pytest

from micar.config import ConfigError, MicarConfig, flatten, load_config, parse_override, replace

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert isinstance(cfg, MicarConfig)
    assert (cfg.model.d_model, cfg.model.d_latent, cfg.model.num_heads) == (512, 768, 8)
    assert (cfg.model.moe.num_experts, cfg.model.moe.k, cfg.model.moe.combine) == (8, 2, "unweighted")
    assert cfg.train.seed == 115111211


def test_yaml_and_dotted_overrides(tmp_path):
    path = write(tmp_path, "model:\n  num_layers: 2\n  moe:\n    num_experts: 4\ntrain:\n  lr: 0.001\n")
    cfg = load_config(
        path, ["model.moe.num_experts=6", "model.act_fn=gelu", "train.lr=1e-3", "train.use_gpu=true"]
    )
    assert cfg.model.num_layers == 2
    assert cfg.model.moe.num_experts == 6
    assert cfg.model.act_fn == "gelu"
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.use_gpu is True


def test_int_widens_to_float_but_not_the_reverse(tmp_path):
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        load_config(None, ["train.epochs=1.5"])


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "model:\n  moe:\n    num_expert: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model.moe.num_expert" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_and_bad_choice_name_the_key(tmp_path):
    path = write(tmp_path, "model:\n  num_layers: two\n")
    with pytest.raises(ConfigError, match=r"model.num_layers must be an integer"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"model.attention.kind must be one of \['latent', 'vanilla'\]"):
        load_config(None, ["model.attention.kind=linear"])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="qk_nope_dim"):
        load_config(None, ["model.qk_nope_dim=40"])
    with pytest.raises(ConfigError, match="model.moe.k"):
        load_config(None, ["model.moe.k=9"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("model.num_layers")
    assert parse_override("tracking.uri=") == ("tracking.uri", "")
    assert parse_override("model.vision.pretrained_path=null") == ("model.vision.pretrained_path", None)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_flatten_and_replace():
    cfg = replace(load_config(), {"model.moe.k": 1})
    flat = flatten(cfg)
    assert flat["model.moe.k"] == 1
    assert flat["train.lr"] == pytest.approx(1e-4)
    assert all("." in key or key == "preset" for key in flat)


@pytest.mark.parametrize("path", sorted((REPO / "tune_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads_and_opens_with_its_command(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} must open with a comment giving its command"
    assert "micar " in text.splitlines()[0] or "micar " in text.splitlines()[1]
    if path.name.startswith("sweep"):
        pytest.skip("sweep files are validated by the sweep tests")
    load_config(path)

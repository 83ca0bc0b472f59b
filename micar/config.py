"""Typed, validated configuration for micar, loaded from YAML with dotted overrides.

A config is a tree of dataclasses (``MicarConfig`` at the root). ``load_config(path,
overrides)`` reads a YAML file, applies ``key.sub=value`` overrides (values parsed as YAML
scalars), and validates every key and type. An unknown key, a wrong type or a value outside
its allowed set raises ``ConfigError`` naming the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A user-fixable problem in a config file or an override."""


# ----------------------------------------------------------------------------- model


@dataclass
class VisionConfig:
    kind: Literal["msve", "last_stage"] = "msve"
    backbone: str = "resnet101"
    # Local file (safetensors, or a torch state dict read with weights_only=True); never a download.
    pretrained_path: str | None = None
    grid: int = 7
    freeze_backbone: bool = False


@dataclass
class AttentionConfig:
    kind: Literal["latent", "vanilla"] = "latent"


@dataclass
class FusionConfig:
    kind: Literal["gated", "cross"] = "gated"


@dataclass
class DecoderConfig:
    ffn: Literal["moe", "dense"] = "moe"


@dataclass
class MoEConfig:
    num_experts: int = 8
    k: int = 2
    combine: Literal["unweighted", "weighted"] = "unweighted"
    balance_loss: Literal["entropy", "switch"] = "entropy"
    balance_coef: float = 0.01


@dataclass
class ModelConfig:
    d_v: int = 2048
    num_heads: int = 8
    num_layers: int = 3
    d_model: int = 512
    d_latent: int = 768
    qk_nope_dim: int = 48
    qk_rope_dim: int = 48
    d_ff: int = 2048
    act_fn: Literal["silu", "gelu", "selu", "telu"] = "silu"
    attention_dropout: float = 0.12
    dropout: float = 0.1
    text_seq_len: int = 60
    # Filled from the tokenizer when the model is built for a data set; 0 = not known yet.
    vocab_size: int = 0
    vision: VisionConfig = field(default_factory=VisionConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)


# ----------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    # Name of the source the prepared directory came from (covctr, mmretinal, pgross, roco, phantom).
    dataset: str = "phantom"
    # A directory written by `micar prepare` (train/ val/ test/ shards, manifest.json, tokenizer/).
    prepared_dir: str = "data/prepared/phantom"
    image_size: int = 224
    resize_size: int = 232
    # Optional cap on rows read per split (0 = all); handy for smoke runs.
    max_rows: int = 0
    # Rows in each training worker's local shuffle buffer (seeded by train.seed + epoch; 0 = no shuffle).
    shuffle_buffer: int = 1024


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    v_lr: float = 5e-5
    weight_decay: float = 5e-5
    amsgrad: bool = True
    # StepLR step in epochs; 0 = epochs // 2 as in the published recipe.
    step_size: int = 0
    gamma: float = 0.1
    patience: int = 50
    grad_clip: float = 0.0
    grad_accum: int = 1
    bf16: bool = True
    seed: int = 115111211
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2
    # Where runs (checkpoints, reports) are stored; a run lives in <output_dir>/<run_name>.
    output_dir: str = "runs"
    run_name: str = ""


@dataclass
class EvalConfig:
    beam_size: int = 3
    max_len: int = 0  # 0 = text_seq_len - 1
    length_penalty: float = 1.0
    # text: score against the cleaned report text; reference: rebuild references from token ids
    # (truncated, with <unk>) as the published code did.
    references: Literal["text", "reference"] = "text"
    val_interval: int = 1
    # Decode at most this many validation rows each epoch (0 = the whole split).
    val_subset: int = 0
    batch_size: int = 32


@dataclass
class TrackingConfig:
    # Empty = $MLFLOW_TRACKING_URI if set, else sqlite:///<cwd>/mlflow.db.
    uri: str = ""
    experiment: str = "micar"
    enabled: bool = True


@dataclass
class MicarConfig:
    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ----------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return _build(tp, value, source, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it spells.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key} has unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key {prefix}{key!s} (known under {prefix or 'the top level'}: "
                f"{', '.join(sorted(names))})"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", source)
    obj = cls(**kwargs)
    _validate(obj, source, prefix)
    return obj


def _validate(obj: Any, source: str, prefix: str) -> None:
    """Cross-field checks that a type alone cannot express."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{source}: {prefix}{key} {msg}")

    if isinstance(obj, ModelConfig):
        need(
            obj.d_model % obj.num_heads == 0,
            "d_model",
            f"({obj.d_model}) must be divisible by num_heads ({obj.num_heads})",
        )
        need(
            obj.d_latent % obj.num_heads == 0,
            "d_latent",
            f"({obj.d_latent}) must be divisible by num_heads ({obj.num_heads})",
        )
        need(
            obj.qk_nope_dim + obj.qk_rope_dim == obj.d_latent // obj.num_heads,
            "qk_nope_dim",
            f"+ qk_rope_dim ({obj.qk_nope_dim} + {obj.qk_rope_dim}) must equal d_latent / num_heads ({obj.d_latent // obj.num_heads})",
        )
        need(
            obj.qk_rope_dim % 4 == 0,
            "qk_rope_dim",
            "must be a multiple of 4 (half of it is rotated in pairs)",
        )
        need(obj.num_layers >= 1, "num_layers", "must be >= 1")
        need(obj.text_seq_len >= 3, "text_seq_len", "must be >= 3")
        need(0 <= obj.dropout < 1 and 0 <= obj.attention_dropout < 1, "dropout", "must be in [0, 1)")
    elif isinstance(obj, MoEConfig):
        need(obj.num_experts >= 1, "num_experts", "must be >= 1")
        need(1 <= obj.k <= obj.num_experts, "k", f"must be in [1, num_experts={obj.num_experts}]")
    elif isinstance(obj, TrainConfig):
        need(obj.epochs >= 1, "epochs", "must be >= 1")
        need(obj.batch_size >= 1, "batch_size", "must be >= 1")
        need(obj.workers >= 1, "workers", "must be >= 1")
        need(obj.grad_accum >= 1, "grad_accum", "must be >= 1")
    elif isinstance(obj, EvalConfig):
        need(obj.beam_size >= 1, "beam_size", "must be >= 1")


def config_from_dict(data: dict | None, source: str = "<dict>") -> MicarConfig:
    return _build(MicarConfig, data or {}, source)


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as a YAML scalar (``4``, ``true``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str] | dict[str, Any] | None) -> dict:
    """Return a copy of the nested dict ``data`` with dotted overrides set."""
    import copy

    out = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in items:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> MicarConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with path.open(encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    if overrides:
        source = f"{source} (with overrides)"
        data = apply_overrides(data, overrides)
    return config_from_dict(data, source)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config (or nested dict) to ``{"model.moe.k": 2, ...}``."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def dump_config(cfg: MicarConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def replace(cfg: MicarConfig, overrides: list[str] | dict[str, Any]) -> MicarConfig:
    """A new validated config with overrides applied on top of ``cfg``."""
    return config_from_dict(apply_overrides(to_dict(cfg), overrides), "<overrides>")

"""Import the authors' published checkpoints (``model_snapshot.pth`` + ``token2id.json`` /
``id2token.json``) into this project's model.

The model's modules carry the published names (spec section 11), so the only renames are the
ResNet stages of the vision backbone: the published ``vis_enc.layer1.{0,1,4}`` wrap conv1, bn1
and layer1, ``vis_enc.layer{2,3,4}.0`` wrap layer2..4; here they sit in a timm backbone at
``vis_enc.backbone.*``. The snapshot is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerFast

from micar.config import MicarConfig, load_config, replace
from micar.model import MicarVLMoE, build_model
from micar.text.tokenizer import load_published_vocab

PRESETS_DIR = Path(__file__).resolve().parents[1] / "tune_configs"

# (published prefix, native prefix)
_BACKBONE_RENAMES = (
    ("vis_enc.layer1.0.", "vis_enc.backbone.conv1."),
    ("vis_enc.layer1.1.", "vis_enc.backbone.bn1."),
    ("vis_enc.layer1.4.", "vis_enc.backbone.layer1."),
    ("vis_enc.layer2.0.", "vis_enc.backbone.layer2."),
    ("vis_enc.layer3.0.", "vis_enc.backbone.layer3."),
    ("vis_enc.layer4.0.", "vis_enc.backbone.layer4."),
)


def published_to_native(key: str) -> str:
    """A published state-dict key -> this model's key."""
    for published, native in _BACKBONE_RENAMES:
        if key.startswith(published):
            return native + key[len(published) :]
    return key


def native_to_published(key: str) -> str:
    """This model's state-dict key -> the published key."""
    for published, native in _BACKBONE_RENAMES:
        if key.startswith(native):
            return published + key[len(native) :]
    return key


def to_published_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict under the published names."""
    return {native_to_published(k): v for k, v in model.state_dict().items()}


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML of a named preset in the repository's tune_configs/."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
        raise ValueError(
            f"unknown preset {name!r}; available in {PRESETS_DIR}: {', '.join(available_presets())}"
        )
    return path


def load_preset(name: str, overrides: dict[str, Any] | list[str] | None = None) -> MicarConfig:
    """The validated config of a named preset, with dotted overrides applied."""
    return load_config(preset_path(name), overrides or None)


def load_published_weights(
    model: MicarVLMoE, state: dict[str, Tensor], *, source: str = "<state dict>"
) -> None:
    """Copy a published-layout state dict into ``model``; strict on keys and shapes."""
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        native = published_to_native(key)
        if native not in own:
            raise ValueError(
                f"{source}: unexpected key {key!r} (no such tensor in the model built from the config)"
            )
        if tuple(value.shape) != tuple(own[native].shape):
            raise ValueError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, the model expects {tuple(own[native].shape)} "
                "(check the preset and overrides: layers, widths, vocabulary)"
            )
        mapped[native] = value
    missing = [native_to_published(k) for k in own if k not in mapped]
    if missing:
        raise ValueError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing in all)")
    model.load_state_dict(mapped, strict=True)


def import_reference(
    snapshot: str | Path,
    token2id: str | Path,
    id2token: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    preset: str = "covctr",
    **kw: Any,
) -> tuple[MicarVLMoE, PreTrainedTokenizerFast, MicarConfig]:
    """Like ``load_reference_checkpoint`` but also returns the resolved config."""
    tokenizer = load_published_vocab(token2id, id2token)
    cfg = load_preset(preset)
    cfg = replace(cfg, {"model.vocab_size": len(tokenizer.get_vocab()), **(overrides or {}), **kw})
    snapshot = Path(snapshot)
    if not snapshot.is_file():
        raise FileNotFoundError(f"snapshot {snapshot} does not exist")
    loaded = torch.load(str(snapshot), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
        raise ValueError(
            f"{snapshot}: expected a dict with a 'model' state dict (torch.save({{'model': ...}}))"
        )
    model = build_model(cfg.model, load_pretrained=False)
    load_published_weights(model, loaded["model"], source=str(snapshot))
    return model.eval(), tokenizer, cfg


def load_reference_checkpoint(
    snapshot: str | Path,
    token2id: str | Path,
    id2token: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    preset: str = "covctr",
    **kw: Any,
) -> tuple[MicarVLMoE, PreTrainedTokenizerFast]:
    """A published snapshot and vocabulary -> (model in eval mode, tokenizer).

    The config is the named preset (tune_configs/<preset>.yaml) with the vocabulary size of
    ``token2id`` and dotted overrides, given as a dict and/or keywords
    (``**{"model.num_layers": 2}``). Keys or shapes that do not match raise an error naming them.
    """
    model, tokenizer, _ = import_reference(snapshot, token2id, id2token, overrides, preset=preset, **kw)
    return model, tokenizer

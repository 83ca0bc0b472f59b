"""Native checkpoints: a directory holding ``model.safetensors`` (tensors only), the resolved
``config.yaml`` and the tokenizer files. Nothing is unpickled when loading.

Saving is atomic: everything is written to a temporary directory beside the target, which then
takes the target's name by rename; an existing checkpoint is moved aside first and removed only
after the new one is in place, so a reader never sees a mix of old and new files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import PreTrainedTokenizerFast

from micar.config import MicarConfig, dump_config, load_config
from micar.model import MicarVLMoE, build_model
from micar.text.tokenizer import load_tokenizer, save_tokenizer

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
FORMAT = {"format": "micar", "format_version": "1"}


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def save_checkpoint(
    directory: str | Path, model: nn.Module, tokenizer: PreTrainedTokenizerFast, cfg: MicarConfig
) -> Path:
    """Write ``model``, ``tokenizer`` and ``cfg`` to ``directory`` atomically; returns the path.

    ``cfg.model.vocab_size`` is filled in from the tokenizer when it is 0; a vocabulary that
    disagrees with the model's is an error (nothing is written then).
    """
    directory = Path(directory)
    # A DistributedDataParallel (or similar) wrapper saves the model it wraps.
    model = getattr(model, "module", model)
    vocab_size = len(tokenizer.get_vocab())
    model_vocab = getattr(model, "vocab_size", vocab_size)
    if model_vocab != vocab_size:
        raise ValueError(f"tokenizer has {vocab_size} tokens but the model's vocabulary is {model_vocab}")
    if cfg.model.vocab_size == 0:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size))
    elif cfg.model.vocab_size != vocab_size:
        raise ValueError(
            f"config model.vocab_size={cfg.model.vocab_size} but the tokenizer has {vocab_size} tokens"
        )

    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    try:
        # save_model drops shared (tied) tensors once and load_model restores them.
        save_model(model, str(tmp / MODEL_FILE), metadata=FORMAT)
        dump_config(cfg, tmp / CONFIG_FILE)
        save_tokenizer(tokenizer, tmp)
        _fsync_tree(tmp)
        if directory.exists():
            old = parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved checkpoint to %s", directory)
    return directory


def load_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[MicarVLMoE, PreTrainedTokenizerFast, MicarConfig]:
    """A checkpoint directory written by ``save_checkpoint`` -> (model in eval mode, tokenizer, config)."""
    directory = Path(directory)
    if not directory.is_dir():
        aside = sorted(directory.parent.glob(f".{directory.name}.old-*")) if directory.parent.is_dir() else []
        hint = f"; an interrupted save left the previous one at {aside[-1]}" if aside else ""
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist{hint}")
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a micar checkpoint: {name} is missing")
    cfg = load_config(directory / CONFIG_FILE)
    tokenizer = load_tokenizer(directory)
    model = build_model(cfg.model, load_pretrained=False)
    missing, unexpected = load_model(model, str(directory / MODEL_FILE), strict=False, device="cpu")
    if missing or unexpected:
        raise ValueError(
            f"{directory / MODEL_FILE} does not fit the model of {directory / CONFIG_FILE}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.to(map_location).eval(), tokenizer, cfg

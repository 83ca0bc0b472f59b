"""The resumable training state: tensors in safetensors, everything else in JSON (never pickle).

``save_train_state(directory, state, optimizer, scheduler)`` writes ``optimizer.safetensors``
(every tensor of the optimizer state, keyed ``<param index>.<name>``) and ``train_state.json``
(epoch counters, best score, patience, metric history, MLflow run id, optimizer param groups
and scalar state, scheduler state). RNG state needs no saving: every epoch reseeds Python,
NumPy and torch from (seed, epoch, rank), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_JSON = "train_state.json"
OPTIM_TENSORS = "optimizer.safetensors"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Where a run stands after its last completed epoch."""

    epoch: int = 0  # last completed epoch (1-based; 0 = none yet)
    global_step: int = 0  # optimizer steps taken
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # validations since the last improvement
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # one dict of metrics per epoch
    mlflow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["best_score"] = None if math.isinf(self.best_score) else self.best_score
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        data = dict(data)
        if data.get("best_score") is None:
            data["best_score"] = -math.inf
        return cls(**data)


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_train_state(
    directory: str | Path,
    state: TrainState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, optim_json = _optimizer_split(optimizer)
    save_file(tensors, str(directory / OPTIM_TENSORS))
    record = {
        "format": FORMAT_VERSION,
        "state": state.to_json(),
        "optimizer": optim_json,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    (directory / STATE_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return directory


def _like(saved: Any, current: Any) -> Any:
    # JSON turns tuples (AdamW betas) into lists; give them back the type the optimizer uses.
    if isinstance(current, tuple) and isinstance(saved, list):
        return tuple(saved)
    return saved


def load_train_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> TrainState:
    """Read a state written by ``save_train_state``; restores ``optimizer`` / ``scheduler`` in place."""
    directory = Path(directory)
    path = directory / STATE_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a micar training state")
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported training-state format {record.get('format')!r}")
    if optimizer is not None:
        tensors = load_file(str(directory / OPTIM_TENSORS))
        saved = record["optimizer"]
        current_groups = optimizer.state_dict()["param_groups"]
        if len(current_groups) != len(saved["param_groups"]):
            raise ValueError(
                f"{path}: saved optimizer has {len(saved['param_groups'])} parameter groups, this model "
                f"{len(current_groups)} (was the model config changed between runs?)"
            )
        groups = [
            {k: _like(v, cur.get(k)) for k, v in group.items()}
            for group, cur in zip(saved["param_groups"], current_groups)
        ]
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = tensor
        for idx, slots in saved["scalars"].items():
            state.setdefault(int(idx), {}).update(slots)
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and record.get("scheduler") is not None:
        scheduler.load_state_dict(record["scheduler"])
    return TrainState.from_json(record["state"])

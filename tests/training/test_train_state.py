"""Training state round trip (safetensors + JSON) and the optimiser recipe."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from micar.config import TrainConfig
from micar.training.optim import build_optimizer, build_scheduler
from micar.training.state import OPTIM_TENSORS, STATE_JSON, TrainState, load_train_state, save_train_state


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    cfg = TrainConfig(epochs=6, lr=1e-2, v_lr=1e-3)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg)


def _step(model, opt, sched) -> None:
    loss = model(torch.ones(3, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()


def test_round_trip_continues_identically(tmp_path: Path) -> None:
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    state = TrainState(
        epoch=3, global_step=3, best_score=0.5, best_epoch=2, bad_epochs=1, history=[{"epoch": 1.0}]
    )
    save_train_state(tmp_path / "s", state, opt, sched)
    assert (tmp_path / "s" / OPTIM_TENSORS).is_file() and (tmp_path / "s" / STATE_JSON).is_file()
    assert not list((tmp_path / "s").glob("*.pt")) and not list((tmp_path / "s").glob("*.pkl"))

    model2, opt2, sched2 = _setup(seed=1)
    model2.load_state_dict(model.state_dict())
    loaded = load_train_state(tmp_path / "s", opt2, sched2)
    assert loaded == state
    assert sched2.state_dict() == sched.state_dict()
    _step(model, opt, sched)
    _step(model2, opt2, sched2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_fresh_state_json(tmp_path: Path) -> None:
    model, opt, sched = _setup()
    save_train_state(tmp_path, TrainState(), opt, sched)
    assert math.isinf(load_train_state(tmp_path).best_score)


def test_step_lr_defaults_to_half_the_epochs() -> None:
    _, opt, sched = _setup()
    assert sched.step_size == 3 and sched.gamma == 0.1
    # No vision encoder here: one group at train.lr.
    assert [g["lr"] for g in opt.param_groups] == [1e-2]
    assert opt.defaults["amsgrad"] is True

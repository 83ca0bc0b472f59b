"""The published optimisation recipe (reference-model spec, section 10).

AdamW (amsgrad) with two parameter groups - the vision encoder at ``train.v_lr``, everything
else at ``train.lr`` - and a StepLR stepped once per epoch (step ``train.step_size``, or
``epochs // 2`` when it is 0).
"""

from __future__ import annotations

import torch
from torch import nn

from micar.config import TrainConfig


def vision_module(model: nn.Module) -> nn.Module | None:
    """The model's vision encoder (the ``MultiScaleVisionEncoder`` inside it), if any."""
    from micar.modules.vision import MultiScaleVisionEncoder

    for module in model.modules():
        if isinstance(module, MultiScaleVisionEncoder):
            return module
    return None


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """``[vision encoder @ v_lr, rest @ lr]`` over trainable parameters (empty groups dropped)."""
    vision = vision_module(model)
    vision_ids = {id(p) for p in vision.parameters()} if vision is not None else set()
    v_params, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (v_params if id(p) in vision_ids else rest).append(p)
    groups = [
        {"params": v_params, "lr": cfg.v_lr, "name": "vision"},
        {"params": rest, "lr": cfg.lr, "name": "rest"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.StepLR:
    step = cfg.step_size or max(1, cfg.epochs // 2)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.gamma)

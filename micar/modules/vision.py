"""The vision encoder (MSVE): a timm CNN backbone and a feature pyramid pooled to a token grid.

Reference-model spec, section 1. Any timm model that supports ``features_only`` works; its last
four stages are C2..C5. The ``last_stage`` ablation drops the pyramid and uses C5 alone.
Pretrained weights come only from a local file; nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a safetensors file or a torch state dict (read with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist (vision.pretrained_path)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def build_backbone(name: str, *, num_stages: int = 4, pretrained_path: str | Path | None = None) -> nn.Module:
    """A timm ``features_only`` backbone returning its last ``num_stages`` feature maps.

    With ``pretrained_path``, the backbone's weights are loaded from that local file (a timm or
    torchvision state dict of the full classifier; the classifier's own keys are ignored).
    """
    backbone = timm.create_model(
        name, features_only=True, pretrained=False, out_indices=tuple(range(-num_stages, 0))
    )
    if pretrained_path:
        state = read_state_dict(pretrained_path)
        own = backbone.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(
                f"{pretrained_path}: not weights for backbone {name!r}; missing {len(missing)} keys, "
                f"first {missing[:3]}"
            )
        for key in own:
            if state[key].shape != own[key].shape:
                raise ValueError(
                    f"{pretrained_path}: {key} has shape {tuple(state[key].shape)}, "
                    f"backbone {name!r} expects {tuple(own[key].shape)}"
                )
        backbone.load_state_dict({key: state[key] for key in own})
        log.info("loaded %s backbone weights from %s", name, pretrained_path)
    return backbone


def _lateral(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class MultiScaleVisionEncoder(nn.Module):
    """Backbone + FPN (laterals, top-down sum, fused 3x3 conv) + adaptive pool to a grid.

    ``kind="msve"`` is the paper's multi-scale encoder; ``kind="last_stage"`` keeps only the C5
    lateral (1x1 conv, BN, ReLU) before pooling. Output tokens are the grid cells, row-major.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        stage_channels: Sequence[int],
        d_v: int,
        grid: int = 7,
        kind: Literal["msve", "last_stage"] = "msve",
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("msve", "last_stage"):
            raise ValueError(f"vision kind must be 'msve' or 'last_stage', got {kind!r}")
        if kind == "msve" and len(stage_channels) != 4:
            raise ValueError(f"the msve pyramid needs 4 backbone stages, got channels {list(stage_channels)}")
        self.kind = kind
        self.grid = grid
        self.freeze_backbone = freeze_backbone
        self.backbone = backbone
        if kind == "msve":
            c2, c3, c4, c5 = stage_channels
            self.fpn_c2 = _lateral(c2, d_v, 1)
            self.fpn_c3 = _lateral(c3, d_v, 1)
            self.fpn_c4 = _lateral(c4, d_v, 1)
            self.fpn_c5 = _lateral(c5, d_v, 1)
            self.fusion = _lateral(d_v, d_v, 3)
        else:
            self.fpn_c5 = _lateral(stage_channels[-1], d_v, 1)
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> MultiScaleVisionEncoder:
        super().train(mode)
        if self.freeze_backbone:
            # A frozen backbone keeps its BatchNorm statistics too.
            self.backbone.eval()
        return self

    def forward_stages(self, stages: Sequence[Tensor]) -> Tensor:
        """Backbone stage maps (C2..C5, each [b, c_i, H_i, W_i]) -> tokens [b, grid * grid, d_v]"""
        if self.kind == "msve":
            c2, c3, c4, c5 = stages[-4:]
            p5 = self.fpn_c5(c5)
            p4 = self.fpn_c4(c4) + _up(p5, c4)
            p3 = self.fpn_c3(c3) + _up(p4, c3)
            p2 = self.fpn_c2(c2) + _up(p3, c2)
            fused = self.fusion(p2 + _up(p3, p2) + _up(p4, p2) + _up(p5, p2))
        else:
            fused = self.fpn_c5(stages[-1])
        pooled = F.adaptive_avg_pool2d(fused, self.grid)
        # [b, d_v, g, g] -> [b, g * g, d_v], row-major cells
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, images: Tensor) -> Tensor:
        """images [b, 3, H, W] -> tokens [b, grid * grid, d_v]"""
        return self.forward_stages(self.backbone(images))

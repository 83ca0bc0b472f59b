"""micar.modules.vision: the MSVE head (golden parity), timm backbones, local pretrained weights."""

from __future__ import annotations

import pytest
import torch
from golden import golden, needs_golden
from safetensors.torch import save_file

from micar.modules.vision import MultiScaleVisionEncoder, build_backbone


@needs_golden
def test_msve_head_matches_published():
    cfg, params, inputs, outputs = golden("msve_head")
    encoder = MultiScaleVisionEncoder(
        backbone=torch.nn.Identity(),
        stage_channels=[256, 512, 1024, 2048],
        d_v=cfg["d_v"],
        grid=cfg["pool"][0],
    ).eval()
    encoder.load_state_dict(params)
    with torch.no_grad():
        y = encoder.forward_stages([inputs[f"c{i}"] for i in (2, 3, 4, 5)])
    torch.testing.assert_close(y, outputs["y"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["msve", "last_stage"])
def test_timm_backbone_shapes(kind):
    torch.manual_seed(0)
    backbone = build_backbone("resnet10t", num_stages=4 if kind == "msve" else 1)
    encoder = MultiScaleVisionEncoder(
        backbone=backbone, stage_channels=backbone.feature_info.channels(), d_v=16, grid=3, kind=kind
    ).eval()
    y = encoder(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 9, 16)
    assert (y >= 0).all()  # ends in ReLU, then averaging
    if kind == "last_stage":
        assert not hasattr(encoder, "fusion") and not hasattr(encoder, "fpn_c2")


def test_grid_is_row_major():
    encoder = MultiScaleVisionEncoder(
        backbone=torch.nn.Identity(), stage_channels=[4], d_v=2, grid=2, kind="last_stage"
    )
    encoder.eval()
    with torch.no_grad():
        conv, bn = encoder.fpn_c5[0], encoder.fpn_c5[1]
        conv.weight.zero_()
        conv.weight[:, 0, 0, 0] = 1.0
        conv.bias.zero_()
    c5 = torch.zeros(1, 4, 2, 2)
    c5[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = encoder.forward_stages([c5])
    scale = 1 / (1 + bn.eps) ** 0.5
    torch.testing.assert_close(y[0, :, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]) * scale)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_pretrained_weights_from_local_file(tmp_path, fmt):
    import timm

    torch.manual_seed(1)
    full = timm.create_model("resnet10t", pretrained=False)
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    backbone = build_backbone("resnet10t", pretrained_path=path)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("resnet10t", pretrained_path=tmp_path / "nope.safetensors")
    save_file({"conv1.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        build_backbone("resnet10t", pretrained_path=tmp_path / "bad.safetensors")


def test_frozen_backbone_stays_in_eval():
    backbone = build_backbone("resnet10t")
    encoder = MultiScaleVisionEncoder(
        backbone=backbone, stage_channels=backbone.feature_info.channels(), d_v=8, freeze_backbone=True
    )
    encoder.train()
    assert not backbone.training and encoder.fpn_c2.training
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(p.requires_grad for p in encoder.fusion.parameters())

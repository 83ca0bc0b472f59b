"""micar.modules.fusion: gated fusion (golden parity) and the cross-attention ablation."""

from __future__ import annotations

import torch
from golden import golden, needs_golden

from micar.modules.attention import LatentCrossAttention, VanillaCrossAttention
from micar.modules.fusion import CrossFusion, GatedFusion

SMALL = dict(d_model=16, num_heads=2, d_latent=24, qk_nope_dim=4, qk_rope_dim=8)


@needs_golden
def test_gated_fusion_matches_published():
    cfg, params, inputs, outputs = golden("gated_fusion")
    act = cfg.pop("act_fn")
    fusion = GatedFusion(
        d_model=cfg["d_model"], cross_attention=LatentCrossAttention(**cfg), act_fn=act
    ).eval()
    fusion.load_state_dict(params)
    with torch.no_grad():
        y = fusion(inputs["x"], fusion.prepare(inputs["image"]))
    torch.testing.assert_close(y, outputs["y"], atol=1e-5, rtol=0)


def test_gated_fusion_stepwise_equals_full():
    torch.manual_seed(0)
    fusion = GatedFusion(d_model=16, cross_attention=LatentCrossAttention(**SMALL), act_fn="gelu").eval()
    x, image = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    memory = fusion.prepare(image)
    assert memory.summary.shape == (2, 1, 16)
    full = fusion(x, memory)
    rows = [fusion(x[:, i : i + 1], memory, start=i) for i in range(5)]
    torch.testing.assert_close(torch.cat(rows, dim=1), full, atol=1e-6, rtol=0)


def test_cross_fusion_is_plain_cross_attention():
    torch.manual_seed(0)
    cross = VanillaCrossAttention(d_model=16, num_heads=2)
    fusion = CrossFusion(d_model=16, cross_attention=cross).eval()
    x, image = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    y = fusion(x, fusion.prepare(image))
    torch.testing.assert_close(y, cross(fusion.norm1(x), fusion.norm2(image)))
    assert fusion.prepare(image).summary is None

"""Run plots: PNGs from a metric history; no expert plot without a mixture of experts."""

from __future__ import annotations

from pathlib import Path

from micar.training.plots import plot_expert_usage, plot_learning_curves

HISTORY = [
    {
        "epoch": 1.0,
        "train_loss": 2.0,
        "val_loss": 1.8,
        "val_BLEU-4": 0.1,
        "expert_usage/layer0/e0": 0.7,
        "expert_usage/layer0/e1": 0.3,
    },
    {
        "epoch": 2.0,
        "train_loss": 1.0,
        "val_loss": 1.1,
        "val_BLEU-4": 0.3,
        "expert_usage/layer0/e0": 0.5,
        "expert_usage/layer0/e1": 0.5,
    },
]


def test_plots(tmp_path: Path) -> None:
    curves = plot_learning_curves(HISTORY, tmp_path / "c.png")
    usage = plot_expert_usage(HISTORY, tmp_path / "u.png")
    for path in (curves, usage):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dense = [{k: v for k, v in h.items() if not k.startswith("expert")} for h in HISTORY]
    assert plot_expert_usage(dense, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()

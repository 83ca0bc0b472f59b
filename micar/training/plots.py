"""Run plots for MLflow and the run directory (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

_USAGE = re.compile(r"^expert_usage/layer(\d+)/e(\d+)$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Train / val loss and the val scores per epoch -> a two-panel PNG."""
    plt = _pyplot()
    path = Path(path)
    epochs = [int(h["epoch"]) for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train loss"), ("train_ce", "train CE"), ("val_loss", "val CE")):
        pts = [(int(h["epoch"]), h[key]) for h in history if key in h]
        if pts:
            ax_loss.plot(*zip(*pts), marker="o", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key in ("val_BLEU-1", "val_BLEU-4", "val_METEOR", "val_ROUGE-L", "val_monitored"):
        pts = [(int(h["epoch"]), h[key]) for h in history if key in h]
        if pts:
            ax_score.plot(*zip(*pts), marker="o", label=key.removeprefix("val_"))
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel("validation score")
    if ax_score.lines:
        ax_score.legend()
    if epochs:
        fig.suptitle(f"learning curves ({len(epochs)} epochs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_expert_usage(history: Sequence[dict[str, float]], path: str | Path) -> Path | None:
    """Share of routed tokens per expert, one panel per decoder layer, over epochs (None without MoE)."""
    usage: dict[int, dict[int, list[tuple[int, float]]]] = {}
    for h in history:
        for key, value in h.items():
            m = _USAGE.match(key)
            if m:
                layer, e = int(m.group(1)), int(m.group(2))
                usage.setdefault(layer, {}).setdefault(e, []).append((int(h["epoch"]), value))
    if not usage:
        return None
    plt = _pyplot()
    path = Path(path)
    layers = sorted(usage)
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 3.8), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        experts = sorted(usage[layer])
        epochs = sorted({ep for e in experts for ep, _ in usage[layer][e]})
        bottom = [0.0] * len(epochs)
        for e in experts:
            vals = dict(usage[layer][e])
            heights = [vals.get(ep, 0.0) for ep in epochs]
            ax.bar(epochs, heights, bottom=bottom, label=f"e{e}")
            bottom = [b + v for b, v in zip(bottom, heights)]
        ax.set_title(f"decoder layer {layer}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of routed tokens")
        ax.set_ylim(0, 1)
    axes[0][-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

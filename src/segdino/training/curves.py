"""`curves.png`: a run's training curves, titled with its name, its best epoch marked."""

from __future__ import annotations

import os

from segdino.atomic import atomic_path

BEST_COLOUR = "#D55E00"  # Okabe-Ito vermilion: apart from matplotlib's blue/orange/green lines


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the epochs whose record has `key`; epochs count from 1."""
    points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(history)
              if row.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def best_epoch(history: list[dict]) -> tuple[int, float] | None:
    """(epoch, val Dice) of the best epoch, the one whose checkpoint is `best.safetensors`:
    the first of the highest val Dice, as training keeps only strict improvements; None
    without validation."""
    epochs, dices = _series(history, "val_dice")
    if not epochs:
        return None
    k = max(range(len(dices)), key=lambda i: (dices[i], -i))
    return epochs[k], dices[k]


def save_curves(history: list[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """A PNG of training curves from one record per epoch: loss (`train_loss`, `val_loss`)
    on the left, Dice and IoU (`val_dice`, `val_iou`, and `train_dice`) on the right, the
    best epoch a dotted line on both with its val Dice marked; `title` above (the run's
    name). Missing keys are left out; an `epoch` key (1-based) places each record."""
    # Imported here: matplotlib is slow to import and only training needs it. The Figure API
    # (no pyplot) keeps no global state and always renders with Agg.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Fixed margins: "tight" layout draws the figure twice, and half the time went to it.
    fig = Figure(figsize=(10, 4), dpi=100)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88 if title else 0.95,
                        wspace=0.2)
    if title:
        fig.suptitle(title)
    loss_ax, score_ax = fig.subplots(1, 2)
    # (axes, y label, ((key, label, line style), ...)); training dashed, validation solid
    panels = (
        (loss_ax, "loss", (("train_loss", "train", "--"), ("val_loss", "validation", "-"))),
        (score_ax, "score", (("val_dice", "val Dice", "-"), ("val_iou", "val IoU", "-"),
                             ("train_dice", "train Dice", "--"))),
    )
    best = best_epoch(history)
    for ax, ylabel, series in panels:
        for key, label, style in series:
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, style, marker="o" if len(epochs) < 30 else None,
                        markersize=3, label=label)
        if best:
            ax.axvline(best[0], color=BEST_COLOUR, linestyle=":", linewidth=1.5,
                       label=f"best: epoch {best[0]}" if ax is loss_ax else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if best:
        score_ax.plot(*best, "*", color=BEST_COLOUR, markersize=12,
                      label=f"best val Dice {best[1]:.4f} (epoch {best[0]})")
    for ax in (loss_ax, score_ax):
        if ax.has_data():
            ax.legend()
    score_ax.set_ylim(0, 1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")

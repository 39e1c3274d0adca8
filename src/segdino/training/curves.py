"""`curves.png`: a run's training curves, titled with its name, its best epoch marked; and
cross-validation's `cv_curves.png`, its folds' side by side."""

from __future__ import annotations

import io
import os

from segdino.atomic import write_bytes

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


def _two_panels(title: str | None):
    """A figure of two panels, loss (left) and score (right), under `title`."""
    # Imported here: matplotlib is slow to import and only training needs it. The Figure API
    # (no pyplot) keeps no global state and always renders with Agg.
    from matplotlib.figure import Figure

    # Fixed margins: "tight" layout draws the figure twice, and half the time went to it.
    fig = Figure(figsize=(10, 4), dpi=100)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88 if title else 0.95,
                        wspace=0.2)
    if title:
        fig.suptitle(title)
    return (fig, *fig.subplots(1, 2))


def _save(fig, path: str | os.PathLike) -> None:
    """Label, grid and legend both panels (score on 0..1), and write the PNG atomically."""
    from matplotlib.ticker import MaxNLocator

    for ax, ylabel in zip(fig.axes, ("loss", "score"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.axes[1].set_ylim(0, 1)
    encoded = io.BytesIO()  # in memory first: see picture_files.write_image
    fig.savefig(encoded, format="png")
    write_bytes(path, encoded.getvalue())


def _marker(epochs: list[int]) -> str | None:
    return "o" if len(epochs) < 30 else None


def save_curves(history: list[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """A PNG of training curves from one record per epoch: loss (`train_loss`, `val_loss`)
    on the left, Dice and IoU (`val_dice`, `val_iou`, and `train_dice`) on the right, the
    best epoch a dotted line on both with its val Dice marked; `title` above (the run's
    name). Missing keys are left out; an `epoch` key (1-based) places each record."""
    fig, loss_ax, score_ax = _two_panels(title)
    # (axes, ((key, label, line style), ...)); training dashed, validation solid
    panels = (
        (loss_ax, (("train_loss", "train", "--"), ("val_loss", "validation", "-"))),
        (score_ax, (("val_dice", "val Dice", "-"), ("val_iou", "val IoU", "-"),
                    ("train_dice", "train Dice", "--"))),
    )
    best = best_epoch(history)
    for ax, series in panels:
        for key, label, style in series:
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, style, marker=_marker(epochs), markersize=3,
                        label=label)
        if best:
            ax.axvline(best[0], color=BEST_COLOUR, linestyle=":", linewidth=1.5,
                       label=f"best: epoch {best[0]}" if ax is loss_ax else None)
    if best:
        score_ax.plot(*best, "*", color=BEST_COLOUR, markersize=12,
                      label=f"best val Dice {best[1]:.4f} (epoch {best[0]})")
    _save(fig, path)


def save_fold_curves(histories: list[list[dict]], path: str | os.PathLike,
                     title: str | None = None) -> None:
    """Cross-validation's `cv_curves.png`: each fold's training loss (dashed) and validation
    loss on the left, its val Dice on the right with its best epoch starred; one colour per
    fold (fold k is `histories[k - 1]`)."""
    fig, loss_ax, score_ax = _two_panels(title)
    loss_ax.set_title("validation solid, training dashed", fontsize=9)
    score_ax.set_title("val Dice; a star marks each fold's best epoch", fontsize=9)
    for k, history in enumerate(histories, start=1):
        colour = f"C{(k - 1) % 10}"
        for ax, key, style, label in ((loss_ax, "train_loss", "--", None),
                                      (loss_ax, "val_loss", "-", f"fold {k}"),
                                      (score_ax, "val_dice", "-", f"fold {k}")):
            epochs, values = _series(history, key)
            if epochs:
                ax.plot(epochs, values, style, color=colour, marker=_marker(epochs),
                        markersize=3, label=label)
        if best := best_epoch(history):
            score_ax.plot(*best, "*", color=colour, markersize=12)
    _save(fig, path)

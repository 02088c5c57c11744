"""Figures from saved results, drawn as the study drew them.

Each figure is a `matplotlib.figure.Figure` with its own Agg canvas: no pyplot state, no backend chosen
for the whole process, and nothing to close (a figure is freed with its last reference)."""

from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .files import printable, write_atomic


def _figure(width: float, height: float) -> tuple[Figure, object]:
    """A figure of `width` x `height` inches drawn by Agg, and its one axes."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def loss_name(history: list[dict]) -> str | None:
    """The loss that a history's loss and val_loss both are, in words; None for a history saved before
    records named it (its val_loss was plain cross-entropy whatever the training loss)."""
    return next((r["loss_name"] for r in reversed(history) if r.get("loss_name")), None)


def plot_curves(history: list[dict], out_dir: str, prefix: str = "") -> list[str]:
    """`{prefix}acc_plot.jpg` (ylim 0..1) and `{prefix}loss_plot.jpg` (ylim 0..3), dpi 300, with PNG
    copies: training vs validation per epoch, as in the study. The loss plot's y-label names the loss both
    curves are (the history's loss_name; a history saved before it has none and says "loss")."""
    epochs = [r["epoch"] for r in history]
    written = []
    for key, label, ylim, name in (
        ("accuracy", "accuracy", (0, 1), "acc_plot"),
        ("loss", loss_name(history) or "loss", (0, 3), "loss_plot"),
    ):
        fig, ax = _figure(6.4, 4.8)
        ax.plot(epochs, [r[key] for r in history], label="train")
        if any(r.get(f"val_{key}") is not None for r in history):
            ax.plot(epochs, [r.get(f"val_{key}") for r in history], label="validation")
        ax.set_title(f"model {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ticks at whole epochs, never 1.5
        ax.set_ylabel(label)
        ax.set_ylim(*ylim)
        ax.legend(loc="upper left")
        for ext in ("jpg", "png"):
            written.append(_save(fig, os.path.join(out_dir, f"{prefix}{name}.{ext}"), dpi=300))
    return written


def plot_heatmap(
    matrix: list[list[float | None]],
    row_key: str,
    row_values: list,
    col_key: str,
    col_values: list,
    path: str,
    title: str,
) -> str:
    """A two-dimensional grid of values (in [0, 1]) as a heatmap with the figures written in, in %."""
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig, ax = _figure(1.6 * len(col_values) + 2, 1.2 * len(row_values) + 1.5)
    image = ax.imshow(data * 100, cmap="viridis")
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    ax.set_title(title)
    for i in range(len(row_values)):
        for j in range(len(col_values)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{100 * data[i, j]:.2f}", ha="center", va="center", color="w")
    fig.colorbar(image, ax=ax, label="%")
    fig.tight_layout()
    return _save(fig, path, dpi=150)


def plot_reliability(curves: dict[str, dict], path: str) -> str:
    """A reliability diagram: per confidence bin, the accuracy against the mean top-1 probability, one line
    per curve (label -> calibration.reliability's dict); the diagonal is perfect calibration."""
    fig, ax = _figure(4.6, 4.2)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, bins in curves.items():
        shown = [(p, a, n) for p, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n]
        total = sum(n for _, _, n in shown) or 1
        ax.plot([p for p, _, _ in shown], [a for _, a, _ in shown], marker="o", label=label)
        ax.scatter(
            [p for p, _, _ in shown], [a for _, a, _ in shown], s=[400 * n / total for *_, n in shown], alpha=0.3
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean top-1 probability in the bin)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("reliability (test; dot area: images)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str) -> str:
    """The confusion matrix (rows: true class, columns: predicted), counts written in."""
    import numpy as np

    data = np.array(confusion)
    fig, ax = _figure(1.0 + 0.6 * len(classes), 0.8 + 0.6 * len(classes))
    ax.imshow(data, cmap="Blues")
    names = [printable(c) for c in classes]  # matplotlib refuses the surrogate escapes of non-UTF-8 names
    ax.set_xticks(range(len(classes)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2 if data.size else 0
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                str(data[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if data[i, j] > threshold else "black",
            )
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    return _save(fig, path)


def image_grid(images, titles: list[str], columns: int, path: str, scale: float = 1.0) -> str:
    """uint8 HxWx3 images in a grid, each with its title: one mosaic and one axes (a figure of many
    small axes takes seconds to draw)."""
    import numpy as np

    rows = max(1, -(-len(images) // columns))
    height, width = images[0].shape[:2] if len(images) else (32, 32)
    gap = max(2, height // 8)
    mosaic = np.full((rows * (height + gap), columns * (width + gap), 3), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        mosaic[
            r * (height + gap) + gap : r * (height + gap) + gap + height, c * (width + gap) : c * (width + gap) + width
        ] = image
    fig, ax = _figure(scale * 1.3 * columns, scale * 1.45 * rows)
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for k, title in enumerate(titles):
        r, c = divmod(k, columns)
        x, y = c * (width + gap) + width / 2, r * (height + gap) + gap - 0.5
        ax.text(x, y, printable(title), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str, dpi: int = 110) -> str:
    """Save `fig` to `path` whole or not at all, in the format its extension names (png, jpg)."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    write_atomic(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi))
    return path

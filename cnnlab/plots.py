"""Figures from saved results, drawn as the study drew them."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; never plt.show(), which can leave an empty figure to save
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], out_dir: str, prefix: str = "") -> list[str]:
    """`{prefix}acc_plot.jpg` (ylim 0..1) and `{prefix}loss_plot.jpg` (ylim 0..3), dpi 300, with PNG
    copies: training vs validation per epoch, as in the study."""
    epochs = [r["epoch"] for r in history]
    written = []
    for key, label, ylim, name in (("accuracy", "accuracy", (0, 1), "acc_plot"),
                                   ("loss", "loss", (0, 3), "loss_plot")):
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        ax.plot(epochs, [r[key] for r in history], label="train")
        if any(r.get(f"val_{key}") is not None for r in history):
            ax.plot(epochs, [r.get(f"val_{key}") for r in history], label="validation")
        ax.set_title(f"model {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_ylim(*ylim)
        ax.legend(loc="upper left")
        for ext in ("jpg", "png"):
            path = os.path.join(out_dir, f"{prefix}{name}.{ext}")
            tmp = f"{path}.tmp.{ext}"
            fig.savefig(tmp, dpi=300)
            os.replace(tmp, path)
            written.append(path)
        plt.close(fig)
    return written


def plot_heatmap(matrix: list[list[float | None]], row_key: str, row_values: list, col_key: str,
                 col_values: list, path: str, title: str) -> str:
    """A two-dimensional grid of values (in [0, 1]) as a heatmap with the figures written in, in %."""
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 * len(col_values) + 2, 1.2 * len(row_values) + 1.5))
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
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=150)
    os.replace(tmp, path)
    plt.close(fig)
    return path

"""Figures are written whole or not at all (flushed file, then flushed folder), and they are real images."""

import os
import stat

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnlab import plots

HISTORY = [
    {
        "epoch": e,
        "accuracy": 0.3 + 0.1 * e,
        "loss": 2.0 - 0.3 * e,
        "val_accuracy": 0.25 + 0.1 * e,
        "val_loss": 2.1 - 0.3 * e,
    }
    for e in range(1, 4)
]
PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def draw_each(folder) -> list[str]:
    """Every writer of plots.py once, into `folder`; the paths it says it wrote."""
    folder = str(folder)
    written = plots.plot_curves(HISTORY, folder, prefix="p_")
    written.append(
        plots.plot_heatmap(
            [[0.5, None], [0.7, 0.9]],
            "lr",
            [0.1, 0.2],
            "batch_size",
            [8, 16],
            os.path.join(folder, "heat.png"),
            "accuracy",
        )
    )
    written.append(plots.plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], os.path.join(folder, "confusion.png")))
    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    written.append(plots.image_grid(images, ["a", "b", "c"], 2, os.path.join(folder, "grid.png")))
    return written


def test_each_figure_is_a_whole_image_and_nothing_else_is_left(tmp_path):
    written = draw_each(tmp_path)
    names = [
        "p_acc_plot.jpg",
        "p_acc_plot.png",
        "p_loss_plot.jpg",
        "p_loss_plot.png",
        "heat.png",
        "confusion.png",
        "grid.png",
    ]
    assert written == [str(tmp_path / n) for n in names]
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # no temporary file beside them
    for path in written:
        head = open(path, "rb").read(8)
        assert head.startswith(JPEG if path.endswith(".jpg") else PNG), path


def test_each_figure_is_flushed_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    written = draw_each(tmp_path)
    assert synced == ["file", "folder"] * len(written)


def test_a_failed_save_leaves_the_old_figure_and_no_partial_file(tmp_path, monkeypatch):
    (tmp_path / "confusion.png").write_bytes(b"old")

    def broken(self, fname, **kwargs):
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as fh:
                fh.write(b"half")
        else:
            fname.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="No space"):
        plots.plot_confusion([[1, 0], [0, 1]], ["a", "b"], str(tmp_path / "confusion.png"))
    with pytest.raises(OSError, match="No space"):
        plots.plot_curves(HISTORY, str(tmp_path))
    assert os.listdir(tmp_path) == ["confusion.png"]
    assert (tmp_path / "confusion.png").read_bytes() == b"old"


def drawn_curves(history, folder, monkeypatch) -> dict[str, Figure]:
    """plot_curves's figures by file name (their PNG copies)."""
    figures = {}
    real_save = plots._save

    def keep(fig, path, dpi=110):
        figures[os.path.basename(path)] = fig
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_curves(history, str(folder))
    return figures


def test_the_loss_plot_names_the_loss_both_curves_are(tmp_path, monkeypatch):
    named = [{**r, "loss_name": "cross-entropy, label smoothing 0.2, class-weighted"} for r in HISTORY]
    ax = drawn_curves(named, tmp_path, monkeypatch)["loss_plot.png"].axes[0]
    assert ax.get_ylabel() == "cross-entropy, label smoothing 0.2, class-weighted"
    assert [line.get_label() for line in ax.get_lines()] == ["train", "validation"]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [
        [r["loss"] for r in HISTORY],
        [r["val_loss"] for r in HISTORY],
    ]
    (tmp_path / "old").mkdir()
    old = drawn_curves(HISTORY, tmp_path / "old", monkeypatch)["loss_plot.png"].axes[0]  # a history saved before
    assert old.get_ylabel() == "loss"


def test_the_curves_mark_whole_epochs_only(tmp_path, monkeypatch):
    # four epochs drew ticks at 1.0, 1.5, 2.0 ... 4.0: an epoch 2.5 that no run has
    history = [{**HISTORY[0], "epoch": e} for e in range(1, 5)]
    for name, fig in drawn_curves(history, tmp_path, monkeypatch).items():
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert shown and all(float(tick).is_integer() for tick in shown), (name, shown)

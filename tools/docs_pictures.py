"""Make the documentation's pictures (docs/images/) from real runs, small enough to commit (PNG, < 200 KB).

    cnnlab train --preset fast --data data/cifar10 --subset 5000 --epochs 4 --out /tmp/fast-5k
    cnnlab report /tmp/fast-5k
    cnnlab sweep --data data/cifar10 --subset 2000 --epochs 4 --grid batch_size=128,256 \\
        --grid lr=0.05,0.2 --seeds 2 --out /tmp/sweep-lr-bs
    python tools/docs_pictures.py curves /tmp/fast-5k
    python tools/docs_pictures.py report /tmp/fast-5k --top 5950     # y of the report's Evaluation heading
    cnnlab train --data data/cifar10 --subset 1000 --epochs 2 --out /tmp/tiny && cnnlab report /tmp/tiny
    python tools/docs_pictures.py first-screen /tmp/tiny            # what a 1280x720 window shows first
    python tools/docs_pictures.py heatmap /tmp/sweep-lr-bs

The report is photographed by headless Chromium (`chromium` on the PATH). Say in each picture's caption
which run made it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

from PIL import Image

IMAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images")


def save_small(img: Image.Image, name: str, width: int, folder: str = IMAGES) -> None:
    """Reduce to at most `width` pixels wide and to a 256-colour palette, then write FOLDER/NAME (docs/images)."""
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = os.path.join(folder, name)
    img.save(path, optimize=True)
    print(f"{os.path.normpath(path)}: {img.width}x{img.height}, {os.path.getsize(path) / 1000:.0f} KB")


def curves(run: str, name: str = "curves.png", folder: str = IMAGES) -> None:
    """The run's accuracy and loss plots side by side."""
    plots = [Image.open(os.path.join(run, f"{kind}_plot.png")).convert("RGB") for kind in ("acc", "loss")]
    height = 600
    plots = [p.resize((round(p.width * height / p.height), height), Image.LANCZOS) for p in plots]
    both = Image.new("RGB", (sum(p.width for p in plots), height), "white")
    both.paste(plots[0], (0, 0))
    both.paste(plots[1], (plots[0].width, 0))
    save_small(both, name, 1100, folder)


def screenshot(run: str, width: int, height: int) -> Image.Image:
    """The run's report.html as headless Chromium renders it in a `width` x `height` window."""
    with tempfile.TemporaryDirectory() as tmp:
        shot = os.path.join(tmp, "report.png")
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--hide-scrollbars",
                f"--screenshot={shot}",
                f"--window-size={width},{height}",
                "file://" + os.path.abspath(os.path.join(run, "report.html")),
            ],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        image = Image.open(shot)
        image.load()  # read before the folder goes
        return image


def report(run: str, top: int) -> None:
    """1600 px of the run's report.html from `top` down, as Chromium renders it 1200 px wide."""
    save_small(screenshot(run, 1200, 9000).crop((0, top, 1200, top + 1600)), "report.png", 800)


def first_screen(run: str) -> None:
    """The run's report.html as a 1280x720 browser window shows it before any scrolling."""
    save_small(screenshot(run, 1280, 720), "report_first_screen.png", 800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["curves", "report", "first-screen", "heatmap"])
    parser.add_argument("dir", help="a run directory (curves, report) or a sweep directory (heatmap)")
    parser.add_argument("--top", type=int, default=0, help="report: the y where the picture starts")
    args = parser.parse_args()
    if args.what == "curves":
        curves(args.dir)
    elif args.what == "report":
        report(args.dir, args.top)
    elif args.what == "first-screen":
        first_screen(args.dir)
    else:
        save_small(Image.open(os.path.join(args.dir, "heatmap.png")), "heatmap.png", 700)


if __name__ == "__main__":
    main()

"""What decoding large JPEGs reduced in the DCT (draft mode) before the resize costs: one trained run's
predictions of a photo folder's test images, with the reduced decode and with a full decode (what every
other format gets), the pixels' difference and the decode time of each.

    python tools/make_photo_folder.py ../shared/datasets/cifar10 /tmp/photos --train 100 --test 50
    cnnlab train --data /tmp/photos --out /tmp/photos-run --seed 0 --epochs 12
    python benchmarks/jpeg_draft.py /tmp/photos /tmp/photos-run

Prints, per way, the test accuracy over all images and over the JPEGs, how many predictions differ between
the ways (and how many images only one way gets right), the mean absolute pixel difference of the stored images (0-255), and the decode time (the ways
interleaved, best of --rounds); writes records/jpeg_draft.json. Measured last: see docs/photos.md
("Large JPEGs").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from record import write_record  # noqa: E402

from cnnlab.data import decode  # noqa: E402
from cnnlab.data.folder import list_class_files, list_classes  # noqa: E402
from cnnlab.predict import load  # noqa: E402


def test_files(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels, classes) of root/test in Keras order."""
    classes = list_classes(os.path.join(root, "test"))
    paths, labels = [], []
    for k, name in enumerate(classes):
        files = list_class_files(os.path.join(root, "test", name))
        paths += files
        labels += [k] * len(files)
    return paths, np.array(labels), classes


def decode_all(paths: list[str], prep, draft: bool) -> tuple[np.ndarray, float]:
    """The stored images of `paths` as the run decodes them, the JPEG draft on or off, and the seconds taken."""
    own = decode._draft_scale
    if not draft:
        decode._draft_scale = lambda stored, size, interpolation: 1  # a full decode, then the resize
    try:
        start = time.perf_counter()
        images = np.stack(
            [decode.decode_file(p, prep.image_size, prep.interpolation, prep.resize, prep.exif) for p in paths]
        )
        return images, time.perf_counter() - start
    finally:
        decode._draft_scale = own


def tables(r: dict) -> dict:
    """The page's table: each way's accuracy, its right-only images and its decode time."""
    rows = [
        ["test accuracy", f"{100 * r['draft_accuracy']:.2f}%", f"{100 * r['full_accuracy']:.2f}%"],
        ["accuracy on the JPEGs", f"{100 * r['draft_jpeg_accuracy']:.2f}%", f"{100 * r['full_jpeg_accuracy']:.2f}%"],
        ["images right this way only", r["right_with_draft_only"], r["right_with_full_only"]],
        [
            f"decode time of the {r['test_images']} images",
            f"{r['draft_decode_s']:.2f} s",
            f"{r['full_decode_s']:.2f} s",
        ],
    ]
    return {"reduced vs full decode": {"columns": ["", "reduced decode (kept)", "full decode"], "rows": rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="a folder made by tools/make_photo_folder.py (train/ and test/)")
    parser.add_argument("run", help="a finished run trained on it")
    parser.add_argument("--rounds", type=int, default=2, help="decodes of each way, interleaved (time: the best)")
    args = parser.parse_args()
    predictor = load(args.run, precision="fp32")
    paths, labels, _ = test_files(args.photos)
    jpeg = np.array([p.lower().endswith((".jpg", ".jpeg")) for p in paths])
    images, times = {}, {True: [], False: []}
    for _ in range(args.rounds):
        for draft in (True, False):
            images[draft], seconds = decode_all(paths, predictor.prep, draft)
            times[draft].append(seconds)
    predicted = {draft: predictor.predict_arrays(images[draft]).argmax(1) for draft in (True, False)}
    results = {
        "test_images": len(paths),
        "jpegs": int(jpeg.sum()),
        "stored_size": list(predictor.prep.image_size),
        "predictions_differing": int((predicted[True] != predicted[False]).sum()),
        # the discordant pairs (McNemar's test): right with one way only
        "right_with_draft_only": int(((predicted[True] == labels) & (predicted[False] != labels)).sum()),
        "right_with_full_only": int(((predicted[False] == labels) & (predicted[True] != labels)).sum()),
        "jpeg_pixels_mean_abs_diff": float(
            np.abs(images[True][jpeg].astype(np.int16) - images[False][jpeg].astype(np.int16)).mean()
        ),
    }
    for draft, name in ((True, "draft"), (False, "full")):
        results[f"{name}_accuracy"] = float((predicted[draft] == labels).mean())
        results[f"{name}_jpeg_accuracy"] = float((predicted[draft][jpeg] == labels[jpeg]).mean())
        results[f"{name}_decode_s"] = min(times[draft])
    for key, value in results.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    results["tables"] = tables(results)
    print(f"wrote {write_record('jpeg_draft', 'test accuracy with the JPEG draft decode vs a full decode', results)}")


if __name__ == "__main__":
    main()

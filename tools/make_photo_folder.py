"""Build a folder of "ordinary photos" from CIFAR-10 image folders, to try cnnlab as a user with their own
photos would: every image upscaled to a random size (shorter side and aspect ratio drawn per image),
saved as JPEG or PNG, some grayscale, some stored lying on their side with an EXIF orientation tag as
phones write them.

    python tools/make_photo_folder.py ../shared/datasets/cifar10 /tmp/photos --train 100 --test 30

Writes PHOTOS/train/<class>/ and PHOTOS/test/<class>/; prints the count, total size and size range.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

ORIENTATION = 0x0112


def make_one(job: tuple[str, str, int]) -> tuple[int, int, int]:
    source, target, seed = job
    rng = np.random.default_rng(seed)
    img = Image.open(source).convert("RGB")
    aspect = rng.uniform(0.6, 1.8)  # width / height
    longer = int(rng.integers(300, 1601))
    width, height = (longer, int(longer / aspect)) if aspect >= 1 else (int(longer * aspect), longer)
    img = img.resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.1:
        img = img.convert("L")
    exif = Image.Exif()
    if rng.random() < 0.2:  # stored on its side; orientation 6 = turn 90 degrees clockwise to view
        img = img.transpose(Image.Transpose.ROTATE_90)
        exif[ORIENTATION] = 6
    if rng.random() < 0.75:
        target += ".jpg"
        img.save(target, "JPEG", quality=90, exif=exif.tobytes())
    else:
        target += ".png"
        img.save(target, "PNG", exif=exif.tobytes())
    return os.path.getsize(target), height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar", help="CIFAR-10 image folders (train/ and test/)")
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=100, help="photos per class in train/")
    parser.add_argument("--test", type=int, default=30, help="photos per class in test/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jobs = []
    for split, count in (("train", args.train), ("test", args.test)):
        for cls in sorted(os.listdir(os.path.join(args.cifar, split))):
            # Drawn at random from files a cnnlab run on CIFAR-10 never trains on (so --init-from such a run starts
            # from pictures it has not seen): train/ from Keras's validation split (the first 500 sorted files of
            # each class), test/ from the test split. Sorted names group CIFAR's source queries ("alley_cat_s_..."),
            # hence a random draw rather than the first files.
            pool = sorted(os.listdir(os.path.join(args.cifar, split, cls)))[:500]
            names = sorted(np.random.default_rng([args.seed, len(jobs)]).choice(pool, count, replace=False))
            os.makedirs(os.path.join(args.out, split, cls), exist_ok=True)
            for name in names:
                jobs.append(
                    (
                        os.path.join(args.cifar, split, cls, name),
                        os.path.join(args.out, split, cls, os.path.splitext(name)[0]),
                        args.seed * 10**6 + len(jobs),
                    )
                )
    with ProcessPoolExecutor() as pool:
        done = list(pool.map(make_one, jobs, chunksize=16))
    sizes = np.array([d[1:] for d in done])
    print(
        f"{len(done)} photos, {sum(d[0] for d in done) / 1e6:.0f} MB, heights {sizes[:, 0].min()}-{sizes[:, 0].max()}, "
        f"widths {sizes[:, 1].min()}-{sizes[:, 1].max()} px, in {args.out}"
    )


if __name__ == "__main__":
    main()

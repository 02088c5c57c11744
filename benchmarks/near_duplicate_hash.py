"""Which perceptual hash, and what Hamming distance, for `cnnlab data check`'s near-duplicates: for each of
imagehash's phash, dhash, average_hash and whash (64 bits), the share of CIFAR-10 test images whose
re-encoded / resized copy hashes within k bits of the original (recall), and how many pairs of distinct
images (test x train) fall within k bits (false alarms, or real near-duplicates of CIFAR's own).

    python benchmarks/near_duplicate_hash.py [N_TEST N_TRAIN]   (default 2000 5000; CNNLAB_DATA = the folder)

Writes benchmarks/records/near_duplicate_hash.json (the table on docs/data_check.md).
"""

import glob
import io
import os
import sys
import time

import imagehash
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.check.pairs import popcount64  # noqa: E402

HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash, "whash": imagehash.whash}


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


COPIES = {
    "jpeg q50": lambda im: jpeg(im, 50),
    "down 24px": lambda im: im.resize((24, 24), Image.BILINEAR),
    "up 64px + jpeg q75": lambda im: jpeg(im.resize((64, 64), Image.BICUBIC), 75),
    "down 24px + jpeg q70": lambda im: jpeg(im.resize((24, 24), Image.BILINEAR), 70),
}


def packed(hash_fn, image: Image.Image) -> int:
    return int(np.packbits(hash_fn(image).hash.ravel()).view(">u8")[0])


def main() -> None:
    root = os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10")
    n_test, n_train = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (2000, 5000)
    rng = np.random.default_rng(0)
    test, train = sorted(glob.glob(f"{root}/test/*/*.png")), sorted(glob.glob(f"{root}/train/*/*.png"))
    test = [test[i] for i in rng.choice(len(test), n_test, replace=False)]
    train = [train[i] for i in rng.choice(len(train), n_train, replace=False)]
    originals = [Image.open(p).convert("RGB") for p in test]
    others = [Image.open(p).convert("RGB") for p in train]
    print(f"{n_test} test images and their copies; {n_test * n_train:,} distinct test x train pairs")
    results, rows = {"test_images": n_test, "train_images": n_train, "hashes": {}}, []
    for name, fn in HASHES.items():
        start = time.perf_counter()
        a = np.array([packed(fn, im) for im in originals], dtype=np.uint64)
        b = np.array([packed(fn, im) for im in others], dtype=np.uint64)
        ms = 1000 * (time.perf_counter() - start) / (n_test + n_train)
        recall = {}
        for copy_name, copy in COPIES.items():
            d = popcount64(a ^ np.array([packed(fn, copy(im)) for im in originals], dtype=np.uint64))
            recall[copy_name] = {k: float((d <= k).mean()) for k in (2, 4, 6, 8, 10)}
        null = popcount64(a[:, None] ^ b[None, :]).ravel()
        distinct = {k: int((null <= k).sum()) for k in range(0, 13, 2)}
        results["hashes"][name] = {"ms_per_image": ms, "recall": recall, "distinct_pairs_within": distinct}
        spans = [recall_span(recall, k) for k in (2, 4, 6)]
        rows.append([name, *spans, f"{distinct[2]:,} / {distinct[6]:,} / {distinct[10]:,}"])
        copies = f"copies within 2/4/6 bits {', '.join(spans)}"
        print(f"{name} ({ms:.2f} ms/image): {copies}; distinct pairs within 2/6/10 bits {rows[-1][-1]}")
    columns = [
        "hash (64 bits)",
        "copies within 2 bits",
        "within 4",
        "within 6",
        "distinct pairs within 2 / 6 / 10 bits",
    ]
    results["tables"] = {"recall of altered copies and distinct pairs": {"columns": columns, "rows": rows}}
    print(write_record("near_duplicate_hash", "which perceptual hash and distance find altered copies", results))


def recall_span(recall: dict, k: int) -> str:
    """The lowest and highest share of copies within k bits over the kinds of copy, in percent."""
    values = [100 * r[k] for r in recall.values()]
    return f"{min(values):.1f}-{max(values):.1f}%"


if __name__ == "__main__":
    main()

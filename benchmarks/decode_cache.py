"""First decode of a dataset into the uint8 cache vs the cached reload.

python benchmarks/decode_cache.py [DATA]     (DATA defaults to $CNNLAB_DATA or ../shared/datasets/cifar10)
"""

import os
import sys
import tempfile
import time

from cnnlab.data import load_dataset


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CNNLAB_CACHE"] = cache
        start = time.perf_counter()
        ds = load_dataset(data, progress=False)
        first = time.perf_counter() - start
        reloads = []
        for _ in range(3):
            start = time.perf_counter()
            load_dataset(data, progress=False)
            reloads.append(time.perf_counter() - start)
    n = sum(len(s) for s in ds.subsets().values())
    reload = sorted(reloads)[1]
    print(f"images: {n} ({ds.image_shape[0]}x{ds.image_shape[1]}), cores: {os.cpu_count()}")
    print(f"first load (scan + decode + cache write): {first:.2f} s ({n / first:,.0f} images/s)")
    print(f"cached reload (scan + stat + read), median of 3: {reload:.2f} s; ratio {first / reload:.1f}x")


if __name__ == "__main__":
    main()

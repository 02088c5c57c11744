"""Duplicate pairs without a Python loop over pairs: exact duplicates by a dict of pixel digests,
near-duplicates by XOR and popcount of packed 64-bit hashes, a block of rows against all columns at a
time in numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0
_POPCOUNT16 = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.uint8)
BLOCK_ELEMENTS = 1 << 18  # hash pairs compared per numpy step (2 MB of uint64: stays in cache)


def popcount64(x: np.ndarray, native: bool = HAS_BITWISE_COUNT) -> np.ndarray:
    """Set bits of each uint64 of `x`, as uint8: numpy's bitwise_count, or a 16-bit table where it is missing."""
    if native:
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POPCOUNT16[x.view(np.uint16)].reshape(*x.shape, 4).sum(-1, dtype=np.uint8)


@dataclass
class Pairs:
    """Index pairs (into the two hash arrays given) and their Hamming distances."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, same: bool = False,
               native: bool = HAS_BITWISE_COUNT) -> Pairs:
    """All (i, j) with popcount(a[i] ^ b[j]) <= threshold; with `same` (a is b) only i < j."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    found_i, found_j, found_d = [], [], []
    step = max(1, BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        rows = a[start:start + step]
        first = start if same else 0  # with `same`, columns before the block's rows were paired with earlier rows
        distance = popcount64(rows[:, None] ^ b[None, first:], native)
        hit = distance <= threshold
        if same:  # the leading square holds the rows against themselves: keep j > i only
            hit[:, :len(rows)] &= np.triu(np.ones((len(rows), len(rows)), dtype=bool), 1)
        i, j = np.nonzero(hit)
        found_i.append(i + start)
        found_j.append(j + first)
        found_d.append(distance[i, j])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros(0, dtype=np.uint8))
    return Pairs(np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
                 np.concatenate(found_d).astype(np.uint8))


def exact_groups(digests: list[str]) -> list[list[int]]:
    """Indices that share a digest, groups of two or more, each in index order (empty digests skipped)."""
    groups: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        if digest:
            groups.setdefault(digest, []).append(index)
    return [members for members in groups.values() if len(members) > 1]

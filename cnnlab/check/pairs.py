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
    """Index pairs (into the two hash arrays given), their Hamming distances, and how many pairs were
    within the threshold in all (more than kept when a limit applied)."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    total: int = 0

    def __len__(self) -> int:
        return len(self.i)

    @staticmethod
    def join(parts: list[Pairs], total: int, limit: int) -> Pairs:
        """The parts as one, the `limit` closest kept (stable: earlier pairs first among equals)."""
        if not parts:
            return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8), total)
        i, j, d = (np.concatenate([getattr(p, f) for p in parts]) for f in ("i", "j", "distance"))
        if len(d) > limit:
            keep = np.sort(np.argsort(d, kind="stable")[:limit])
            i, j, d = i[keep], j[keep], d[keep]
        return Pairs(i.astype(np.int64), j.astype(np.int64), d.astype(np.uint8), total)


def near_pairs(
    a: np.ndarray,
    b: np.ndarray,
    threshold: int,
    same: bool = False,
    native: bool = HAS_BITWISE_COUNT,
    limit: int = 1 << 62,
) -> Pairs:
    """All (i, j) with popcount(a[i] ^ b[j]) <= threshold, the `limit` closest if there are more (memory
    stays bounded by twice the limit); with `same` (a is b) only i < j."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    parts: list[Pairs] = []
    kept = total = 0
    step = max(1, BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        rows = a[start : start + step]
        first = start if same else 0  # with `same`, columns before the block's rows were paired with earlier rows
        distance = popcount64(rows[:, None] ^ b[None, first:], native)
        hit = distance <= threshold
        if same:  # the leading square holds the rows against themselves: keep j > i only
            hit[:, : len(rows)] &= np.triu(np.ones((len(rows), len(rows)), dtype=bool), 1)
        i, j = np.nonzero(hit)
        parts.append(Pairs(i + start, j + first, distance[i, j]))
        kept, total = kept + len(i), total + len(i)
        if kept > 2 * limit:
            parts = [Pairs.join(parts, 0, limit)]
            kept = len(parts[0])
    return Pairs.join(parts, total, limit)


def exact_groups(digests: list[str]) -> list[list[int]]:
    """Indices that share a digest, groups of two or more, each in index order (empty digests skipped)."""
    groups: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        if digest:
            groups.setdefault(digest, []).append(index)
    return [members for members in groups.values() if len(members) > 1]

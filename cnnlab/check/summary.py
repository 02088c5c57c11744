"""The per-split summary of a check (images, classes, problems, grayscale) that the JSON, the terminal
table and the page all show, and the names of the files the check writes (the page points to the JSON)."""

from __future__ import annotations

from collections import Counter

from .core import EXTREME_ASPECT, SPLITS, CheckResult

JSON_NAME, HTML_NAME = "data_check.json", "data_check.html"
PROBLEM_KINDS = ("unreadable", "truncated", "empty", "small", "aspect", "blank")


def split_summaries(result: CheckResult) -> dict[str, dict]:
    out = {}
    for split in SPLITS:
        items = [i for i in result.items if i.split == split]
        if not items:
            continue
        kinds = Counter(p.kind for p in result.problems if result.items[p.item].split == split)
        readable = [i for i in items if i.record.problem is None]
        gray = sum(i.record.gray for i in readable)
        out[split] = {
            "images": len(items),
            "readable": len(readable),
            "classes": len({i.label for i in items}),
            "problems": {k: kinds.get(k, 0) for k in PROBLEM_KINDS},
            "grayscale": gray,
            "grayscale_share": round(gray / len(readable), 4) if readable else None,
        }
    return out


def summary_rows(result: CheckResult) -> tuple[list[str], list[list[str]]]:
    """The per-split table, shared by the terminal and the page."""
    headers = [
        "split",
        "images",
        "classes",
        "unreadable",
        "truncated",
        "empty",
        f"small<{result.min_size}px",
        f"aspect>{EXTREME_ASPECT:g}:1",
        "blank",
        "grayscale",
    ]
    rows = []
    for split, s in split_summaries(result).items():
        share = "-" if s["grayscale_share"] is None else f"{100 * s['grayscale_share']:.1f}%"
        rows.append(
            [split, str(s["images"]), str(s["classes"])] + [str(s["problems"][k]) for k in PROBLEM_KINDS] + [share]
        )
    return headers, rows

"""The check's results as JSON, as a table on the terminal, and written (atomically) with the HTML page."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

from ..adaptation import imbalance_ratio
from ..files import create_new_dir, write_atomic
from ..files import printable as shown  # a name from the user's folder, printable and writable as UTF-8
from .core import EXTREME_ASPECT, SPLITS, CheckResult, folder_counts, leakage
from .page import render_html
from .summary import HTML_NAME, JSON_NAME, split_summaries, summary_rows


def json_ratio(ratio: float) -> float | None:
    """An imbalance ratio as JSON holds it: None where a class is empty (inf)."""
    return None if ratio == float("inf") else round(ratio, 3)


SHOWN = 10  # pairs and suspects listed on the terminal


def to_json(result: CheckResult) -> dict:
    items = result.items

    def where(k: int) -> dict:
        return {"path": shown(items[k].path), "split": items[k].split, "class": shown(items[k].label)}

    options = dataclasses.asdict(result.options)
    return {
        "path": shown(result.root),
        "layout": result.layout,
        "options": options,
        "min_size": result.min_size,
        "hash": "imagehash.phash, 64 bits",
        "extreme_aspect": EXTREME_ASPECT,
        "splits": split_summaries(result),
        "class_counts": {f"{k}/": {shown(c): n for c, n in v.items()} for k, v in folder_counts(result).items()},
        "imbalance": {f"{k}/": json_ratio(imbalance_ratio(v.values())) for k, v in folder_counts(result).items()},
        "leakage": [dataclasses.asdict(leak) for leak in leakage(result)],
        "pairs": [
            {"a": where(p.a), "b": where(p.b), "distance": p.distance, "exact": p.exact, "similarity": p.similarity}
            for p in result.pairs
        ],
        "problems": [{**where(p.item), "problem": p.kind, "detail": shown(p.detail)} for p in result.problems],
        "label_issues": None
        if result.label_issues is None
        else [
            {
                **where(s.item),
                "given": shown(s.given),
                "suggested": shown(s.suggested),
                "given_probability": round(s.given_probability, 6),
                "suggested_probability": round(s.suggested_probability, 6),
            }
            for s in result.label_issues
        ],
        "warnings": [shown(w) for w in result.warnings],
    }


def twinned_test_images(json_path: str) -> tuple[str, set[str]]:
    """(the checked folder, the paths under it of the test images that have a duplicate or near-duplicate
    outside test/) from a data_check.json: the images ciFAIR (Barz & Denzler 2020) leaves out of a test
    figure because training has seen them, or nearly."""
    from ..errors import CnnlabError

    try:
        with open(json_path, encoding="utf-8") as fh:
            saved = json.load(fh)
        pairs, root = saved["pairs"], saved["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CnnlabError(f"{json_path}: not a data_check.json of cnnlab data check ({exc})") from None
    twins = set()
    for pair in pairs:
        for one, other in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            if one["split"] == "test" and other["split"] != "test":
                twins.add(one["path"])
    return root, twins


def _named(result: CheckResult, k: int) -> str:
    """A file's path, marked when training's split puts it in validation (its path says train/)."""
    item = result.items[k]
    return shown(item.path) + (" (val)" if item.split == "val" else "")


def format_table(result: CheckResult) -> str:
    headers, rows = summary_rows(result)
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(headers)]
    lines = [
        f"{shown(result.root)} ({result.layout}; train/'s {result.options.split_rule()})",
        "  ".join(h.rjust(w) if c else h.ljust(w) for c, (h, w) in enumerate(zip(headers, widths))),
    ]
    lines += ["  ".join(v.rjust(w) if c else v.ljust(w) for c, (v, w) in enumerate(zip(row, widths))) for row in rows]
    ratios = []
    for folder, counts in folder_counts(result).items():
        big, small = max(counts, key=counts.get), min(counts, key=counts.get)
        spread = (
            f"{shown(big)} {counts[big]}, {shown(small)} {counts[small]}"
            if counts[big] != counts[small]
            else f"{counts[big]} each"
        )
        ratios.append(f"{folder}/ {imbalance_ratio(counts.values()):.2f} ({spread})")
    lines.append(f"class imbalance (largest/smallest class): {'; '.join(ratios)}")
    within = Counter(
        result.items[p.a].split for p in result.pairs if result.items[p.a].split == result.items[p.b].split
    )
    lines.append(
        f"duplicate pairs (exact, or phash distance <= {result.options.threshold}): within "
        + (", ".join(f"{s} {within[s]}" for s in SPLITS if s in within) or "none")
        + "; across "
        + (", ".join(f"{x.first}-{x.second} {x.pairs}" for x in leakage(result)) or "none")
    )
    cross = result.cross_pairs()
    for p in cross[:SHOWN]:
        lines.append(f"  {'exact' if p.exact else f'd={p.distance}':>5}  {_named(result, p.a)}  {_named(result, p.b)}")
    if len(cross) > SHOWN:
        lines.append(f"  ... {len(cross) - SHOWN} more in {JSON_NAME}")
    if result.label_issues is not None:
        lines.append(f"suspected label errors in test/: {len(result.label_issues)}")
        for s in result.label_issues[:SHOWN]:
            lines.append(
                f"  {shown(result.items[s.item].path)}: labelled {shown(s.given)} "
                f"({100 * s.given_probability:.1f}%), looks like {shown(s.suggested)} "
                f"({100 * s.suggested_probability:.1f}%)"
            )
    lines += [f"warning: {shown(w)}" for w in result.warnings]
    return "\n".join(lines)


def check_out(out: str) -> None:
    """Refuse an --out that create_new_dir would refuse, before the scan rather than after it."""
    if os.path.isfile(out) or (os.path.isdir(out) and os.listdir(out)):
        create_new_dir(out)  # raises its one-line error


def write_outputs(result: CheckResult, out: str) -> tuple[str, str]:
    """OUT/data_check.json and OUT/data_check.html in a new folder, each written whole or not at all."""
    create_new_dir(out)
    json_path, html_path = os.path.join(out, JSON_NAME), os.path.join(out, HTML_NAME)
    write_atomic(json_path, json.dumps(to_json(result), indent=1, ensure_ascii=False) + "\n")
    write_atomic(html_path, render_html(result))
    return json_path, html_path

"""data_check.html: one self-contained page (thumbnails as data URIs, inline CSS, no scripts, nothing
fetched), every name that comes from the user's folder escaped."""

from __future__ import annotations

import io
import os
from html import escape

from PIL import Image

from ..data.decode import to_rgb
from ..files import printable as shown  # a name from the user's folder, printable and writable as UTF-8
from ..pages import page, png_uri
from .core import CheckResult, folder_counts
from .summary import JSON_NAME, summary_rows

THUMB = 96  # px, longer side of a thumbnail
SHOWN_PAIRS = 200  # pairs (and suspects, and problem thumbnails) per section; the rest are in the JSON

# a row of figures for the thumbnails, after the shared look (pages.CSS)
CSS = """.pair{display:flex;gap:1em;align-items:flex-start;border-bottom:1px solid #eee;padding:.4em 0}
figure{margin:0;max-width:320px;font-size:.8em;overflow-wrap:anywhere}
figure img{image-rendering:pixelated;display:block;margin-bottom:.2em}"""


def thumbnail(path: str) -> str:
    """An <img> of the file, at most THUMB px (small images enlarged by a whole factor), or '' if unreadable."""
    try:
        with Image.open(path) as image:
            image.load()  # the pixels, before the file closes
            image = to_rgb(image)
    except Exception:  # an unreadable file has no picture; its problem is listed in words
        return ""
    longer = max(image.size)
    if longer > THUMB:
        image.thumbnail((THUMB, THUMB))
    elif longer * 2 <= THUMB:
        factor = THUMB // longer
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return f'<img alt="" src="{png_uri(buffer.getvalue())}">'


def _figure(result: CheckResult, k: int, caption: str) -> str:
    item = result.items[k]
    return (
        f"<figure>{thumbnail(os.path.join(result.root, item.path))}"
        f"<figcaption><b>{escape(item.split)}</b> {escape(shown(item.path))}<br>{caption}</figcaption></figure>"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        + "</tbody></table>"
    )


def _more(total: int) -> str:
    return f"<p>{total - SHOWN_PAIRS} more in {JSON_NAME}.</p>" if total > SHOWN_PAIRS else ""


def _pairs(result: CheckResult, cross: bool) -> list[str]:
    pairs = [p for p in result.pairs if (result.items[p.a].split != result.items[p.b].split) == cross]
    if not pairs:
        return ["<p>None.</p>"]
    out = []
    for p in pairs[:SHOWN_PAIRS]:
        what = "exact (same pixels)" if p.exact else f"phash distance {p.distance}"
        if p.similarity is not None:
            what += f", detail correlation {p.similarity:.2f}"
        out.append(f'<div class="pair">{_figure(result, p.a, escape(what))}{_figure(result, p.b, "")}</div>')
    return out + [_more(len(pairs))]


def _problems(result: CheckResult) -> list[str]:
    if not result.problems:
        return ["<p>None.</p>"]
    rows = [
        [result.items[p.item].split, shown(result.items[p.item].path), p.kind, shown(p.detail)] for p in result.problems
    ]
    out = [_table(["split", "file", "problem", "detail"], rows)]
    pictured = [p for p in result.problems if result.items[p.item].record.problem is None][:SHOWN_PAIRS]
    if pictured:
        out.append('<div class="pair">' + "".join(_figure(result, p.item, escape(p.kind)) for p in pictured) + "</div>")
    return out


def _labels(result: CheckResult) -> list[str]:
    issues = result.label_issues or []
    if not issues:
        return ["<p>None found.</p>"]
    out = []
    for s in issues[:SHOWN_PAIRS]:
        caption = (
            f"labelled <b>{escape(shown(s.given))}</b> ({100 * s.given_probability:.1f}%), looks like "
            f"<b>{escape(shown(s.suggested))}</b> ({100 * s.suggested_probability:.1f}%)"
        )
        out.append(f'<div class="pair">{_figure(result, s.item, caption)}</div>')
    return out + [_more(len(issues))]


def render_html(result: CheckResult) -> str:
    o = result.options
    body = [
        f"<h1>cnnlab data check: {escape(shown(result.root))}</h1>",
        f"<p>Layout: {escape(result.layout)}. As training carves it, train/'s "
        f"{escape(o.split_rule())}. Near-duplicates: imagehash.phash (64 bits) at most "
        f"{o.threshold} bits apart; small: shorter side under {result.min_size} px.</p>",
        "<h2>Warnings</h2>",
    ]
    body.append(
        "<ul>" + "".join(f'<li class="warn">{escape(shown(w))}</li>' for w in result.warnings) + "</ul>"
        if result.warnings
        else "<p>None.</p>"
    )
    body += ["<h2>Summary</h2>", _table(*summary_rows(result))]
    counts = folder_counts(result)
    names = sorted({name for folder in counts.values() for name in folder})
    body.append(
        _table(
            ["class"] + [f"{folder}/ images" for folder in counts],
            [[shown(name)] + [str(c.get(name, "-")) for c in counts.values()] for name in names],
        )
    )
    body += ["<h2>Duplicates across splits (leakage)</h2>"] + _pairs(result, cross=True)
    body += ["<h2>Duplicates within a split</h2>"] + _pairs(result, cross=False)
    body += ["<h2>Problem files</h2>"] + _problems(result)
    if result.label_issues is not None:
        body += ["<h2>Suspected label errors (test split)</h2>"] + _labels(result)
    return page("cnnlab data check", body, CSS)

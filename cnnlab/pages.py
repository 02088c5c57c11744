"""The self-contained HTML pages cnnlab writes (report, data check, interpret): one look, one template.

Every page embeds its pictures as data: URIs, carries its CSS inline, runs no script and loads nothing from
elsewhere; its Content-Security-Policy tells the browser so. Callers escape what comes from a user's folder
(`html.escape`) before it reaches `page`.
"""

from __future__ import annotations

import base64
import html

# the browser may show inline styles and data: pictures, and nothing else: no script, no fetch, no font
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f2f2f2}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
h1{border-bottom:2px solid #333;overflow-wrap:anywhere}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
.muted{color:#666}.warn{color:#a40}"""


def png_uri(png: bytes) -> str:
    """PNG bytes as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, body: list[str], css: str = "") -> str:
    """A whole HTML document: `title` (escaped here), the blocks of `body` (HTML, escaped by their makers),
    the shared CSS followed by a page's own `css`."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{CSS}{css}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )

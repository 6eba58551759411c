"""A tiny document model rendered twice: Markdown (report.md) and self-contained HTML (report.html).

Blocks are tuples: ("h1"|"h2"|"h3", text), ("p", text), ("ul", [items]), ("table", headers, rows),
("img", path relative to the suite folder, alt text). Building the report once as blocks keeps the two
renderings in step.
"""

from __future__ import annotations

import base64
import html
from urllib.parse import quote
import re
from pathlib import Path

from convkit.text import md_inline, md_text, show_controls

# A cell that reads as a number (with sign, thousands commas and a unit): such columns are right-aligned.
_NUMBER = re.compile(r"^[+\-−]?[\d,]*\.?\d+\s*(%|s|ms|×|px)?( \+ .*)?$")
_NO_VALUE = ("not measured", "not in the study", "—", "")
NUMERIC_CLASS = ' class="n"'

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2}.n{text-align:right}
img{max-width:100%;display:block;margin:0.6em 0;border:1px solid #eee}
h2{border-bottom:2px solid #ddd;padding-bottom:0.2em;margin-top:2em}
code{background:#f4f4f4;padding:0 3px;white-space:nowrap}
"""


def numeric_columns(headers: list, rows: list[list]) -> list[bool]:
    """Return, per column, True when every cell with a value reads as a number (right-aligned), else False."""
    out = []
    for i in range(len(headers)):
        cells = [str(r[i]) for r in rows if i < len(r) and str(r[i]) not in _NO_VALUE]
        out.append(bool(cells) and all(_NUMBER.match(c) for c in cells))
    return out


def to_markdown(blocks: list[tuple]) -> str:
    """Return the Markdown text of ``blocks``; every text goes through ``md_inline`` (its `code` spans kept,
    anything else escaped), so strings read from run folders render as text, on one line, never as markup."""
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + md_inline(b[1]))
        elif kind == "p":
            out.append(md_inline(b[1]))
        elif kind == "ul":
            out.append("\n".join(f"- {md_inline(item)}" for item in b[1]))
        elif kind == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(md_inline(h) for h in headers) + " |",
                     "|" + "|".join("---:" if n else "---" for n in numeric_columns(headers, rows)) + "|"]
            lines += ["| " + " | ".join(md_inline(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{md_text(b[2])}]({quote(str(b[1]))})")  # a run folder's name may hold anything
    return "\n\n".join(out) + "\n"


def data_uri(path: Path) -> str:
    """Return the PNG at ``path`` as a data: URI (so the HTML needs no other file and no network)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _inline(text: str) -> str:
    """Escape text, then render `code` spans (the only inline markup the report uses)."""
    parts = html.escape(show_controls(text)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[tuple], root: Path, title: str) -> str:
    """Return a self-contained HTML page of ``blocks``; images under ``root`` are embedded as data URIs."""
    body: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            num = [NUMERIC_CLASS if n else "" for n in numeric_columns(b[1], b[2])]
            head = "".join(f"<th{n}>{_inline(str(h))}</th>" for h, n in zip(b[1], num))
            rows = "".join("<tr>" + "".join(f"<td{n}>{_inline(str(c))}</td>" for c, n in zip(r, num)) + "</tr>"
                           for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            body.append(f'<img src="{data_uri(root / b[1])}" alt="{html.escape(show_controls(b[2]), quote=True)}">')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(show_controls(title))}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")

"""Foreign strings (ONNX metadata, file and class names, error texts from run folders) made safe for Markdown.

eval.md, summary.md and report.md render text that convkit did not write: a model's metadata, a folder's class
names, a run folder's failure message. Each goes through ``md_text`` (or ``md_code`` inside a code span), so
``<script>``, ``<img onerror=…>``, ``[x](javascript:…)``, a ``|`` or a newline render as the characters they are,
on one line, and never as markup, a link or a broken table. Long values are cut (``cap``).
"""

from __future__ import annotations

import html
import re

MAX_TEXT = 200  # characters of one foreign string shown in a document or on the terminal
MAX_PARAGRAPH = 4000  # characters of one paragraph or table cell of the report, which holds several
ELLIPSIS = "…"
# Markdown punctuation that starts a link, an image, an escape or a table cell: escaped with a backslash.
_MD_SPECIAL = re.compile(r"([\\\[\]|])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def cap(value, limit: int = MAX_TEXT) -> str:
    """Return ``str(value)`` on one line (control characters and newlines as one space), cut to ``limit``
    characters with an ellipsis."""
    text = _CONTROL.sub(" ", str(value))
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def md_text(value, limit: int = MAX_TEXT) -> str:
    """Return ``value`` as Markdown text showing exactly its characters: one line, capped, HTML-escaped
    (``<``, ``>``, ``&``: quotes need nothing in Markdown text, and ``&#x27;`` is unreadable where the file is
    read as plain text), and ``\\``, ``[``, ``]``, ``|`` backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(cap(value, limit), quote=False))


def md_code(value, limit: int = MAX_TEXT) -> str:
    """Return ``value`` as a Markdown code span (backticks included): one line, capped, its own backticks shown
    as ``'`` (they would end the span) and ``|`` escaped (it would end a table cell)."""
    return "`" + cap(value, limit).replace("`", "'").replace("|", "\\|") + "`"


def md_inline(text, limit: int = MAX_PARAGRAPH) -> str:
    """Return a text whose only markup is `code` spans as Markdown: the spans kept (their content made safe as
    ``md_code`` does), everything else escaped as ``md_text`` does; capped at ``limit`` characters."""
    parts = cap(text, limit).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no span opens, it is shown as a quote
        parts = ["'".join(parts)]
    return "".join(md_code(p, limit) if i % 2 else md_text(p, limit) for i, p in enumerate(parts))

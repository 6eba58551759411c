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
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Bidirectional controls (LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI; LRM, RLM; ALM): they reorder what follows,
# so ``a\u202eexe.live`` shows as "aevil.exe". Shown as their code (``<U+202E>``), never applied.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
MAX_TERMINAL = 1000  # characters of one foreign string in a terminal line


def show_controls(value) -> str:
    """Return ``str(value)`` with each bidirectional control shown as its code point (``<U+202E>``) and C0/C1
    control characters other than newline and tab as one space: text that displays as the characters it holds,
    in the order they are stored (its lines kept)."""
    text = _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", str(value))
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", " ", text)


def cap(value, limit: int = MAX_TEXT) -> str:
    """Return ``str(value)`` on one line (control characters and newlines as one space, bidirectional controls
    as their code point), cut to ``limit`` characters with an ellipsis."""
    text = _CONTROL.sub(" ", show_controls(value))
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def term(value, limit: int = MAX_TERMINAL) -> str:
    """Return a foreign string (a path, a name, a message from a file) for a terminal line: ``cap``, with a
    newline shown as ``\\n`` so a name holding one cannot start a forged line."""
    return cap(str(value).replace("\r", "\\r").replace("\n", "\\n"), limit)


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

"""Bounds on a zip archive checked from its directory alone, before any member is expanded.

``torch.save`` writes a zip whose members are stored, not compressed; a ``--weights`` (or checkpoint) file whose
members expand far beyond their stored size, or whose expanded total cannot fit in memory, is refused by the
sizes its central directory declares — a 2.9 MB deflated file once expanded to 3.67 GB before it was refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from convkit.errors import ConvkitError

MAX_RATIO = 100  # expanded ÷ stored size of one member beyond which it is a zip bomb, not weights (torch stores)
RATIO_FLOOR = 64 << 20  # members that expand to less than this are never refused for their ratio alone


def check_zip_sizes(path: Path, what: str, available: int | None = None) -> None:
    """Raise ConvkitError (exit 2) when the zip archive at ``path`` (``what``: the flag that named it) declares a
    member expanding more than MAX_RATIO times beyond RATIO_FLOOR, or an expanded total above half of
    ``available`` bytes (default: the memory available now); nothing for a file that is not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):  # not a zip: torch.load says what it is
        return
    for m in members:
        if m.file_size > RATIO_FLOOR and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise ConvkitError(f"{what} {path}: member {m.filename[:80]!r} would expand from {m.compress_size:,} to "
                               f"{m.file_size:,} bytes, not weights as torch.save writes them (it was not "
                               "expanded); save the weights with torch.save(model.state_dict(), …)")
    total = sum(m.file_size for m in members)
    if available is None:
        from convkit.evaluate.serving.scenarios import available_memory  # the one reading of the memory there is

        available = available_memory()
    if total > available // 2:
        raise ConvkitError(f"{what} {path} expands to {total / 2**30:.1f} GiB, more than half the memory available "
                           f"({available / 2**30:.1f} GiB; it was not loaded); use a machine with more memory")

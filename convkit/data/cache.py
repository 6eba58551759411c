"""Verified cache entries: tensors stored with what they are (their key) and a sha256 of their content.

Both tensor caches (the decoded dataset, convkit.data.load; corrupted splits, convkit.data.corruptions) read
through ``load_verified``: an entry is used only when it loads with weights_only, its key is the one asked for,
and the sha256 of its tensors (names, dtypes, shapes and bytes) is the one stored beside them when it was
written. Anything else — a damaged file, an older layout, another entry under this name, pixels altered in
place — is rebuilt from the source, and a line on stderr says so: a cache is never believed over the data.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from convkit.atomic import save_torch

LAYOUT = "convkit.cache/2"  # entries of another layout (convkit < issue 27's, without a content hash) are rebuilt


def content_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Return the sha256 of ``tensors``: each name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(memoryview(np.ascontiguousarray(t.numpy())).cast("B"))
    return h.hexdigest()


def save_verified(path: Path, key: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` with ``key`` and their content sha256 to ``path`` (temp file, then rename); a failure
    to write (a full disk, a read-only cache) only costs the rebuild next time."""
    try:
        save_torch(path, {"layout": LAYOUT, "key": key, "sha256": content_sha256(tensors), "tensors": tensors})
    except Exception:  # the cache was checked writable; the data itself is already in memory
        pass


def load_verified(path: Path, key: dict, what: str) -> dict[str, torch.Tensor] | None:
    """Return the tensors cached at ``path`` for ``key`` when the entry is intact; None when there is none or it
    fails a check (then one line on stderr names ``what``, the file and why it is rebuilt)."""
    path = Path(path)
    if not path.is_file():
        return None
    tensors, why = _read(path, key)
    if why is None:
        return tensors
    print(f"convkit: cached {what} {path} {why}; rebuilding it from the data", file=sys.stderr)
    return None


def _read(path: Path, key: dict) -> tuple[dict | None, str | None]:
    """Return (the entry's tensors, None) when the entry at ``path`` may be used for ``key``, else (None, why)."""
    try:
        doc = torch.load(path, weights_only=True)
    except Exception:  # truncated, not a torch file, or holding objects weights_only refuses
        return None, "is unreadable"
    if not isinstance(doc, dict) or doc.get("layout") != LAYOUT:
        return None, "has an older or foreign layout"
    tensors = doc.get("tensors")
    if doc.get("key") != key or not isinstance(tensors, dict) or not tensors \
            or not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in tensors.items()):
        return None, "holds another entry"
    if content_sha256(tensors) != doc.get("sha256"):
        return None, "fails its content check (its tensors changed since they were written)"
    return tensors, None

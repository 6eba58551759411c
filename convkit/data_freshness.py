"""Whether the data an evaluation was measured on is still that data.

eval.json records where its images came from (``dataset.location``: a catalog dataset and its data folder, or an
image folder / CSV) beside their checksum. Readers (summary, report) recompute the checksum of that data as it is
now: images added, removed or rewritten in place (the folder key hashes every file's bytes) make the evaluation
*stale*, shown as such with the command that measures the data as it is now. Data that cannot be found or read
any more is not flagged (its figure stays tied to the checksum it records; moving a run folder to another
machine keeps it readable).

Policy on re-evaluation (convkit.evaluate.run.keyed_by_data): evaluating a run on the data *at the location it
was trained on* replaces the run's own eval.json (atomically), even when that data changed since training, and
says so in its notes; other data goes to ``eval/<data-key>/``. So a changed data folder never leaves the run's
eval.json stale for ever: one ``convkit evaluate RUN`` refreshes it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from convkit.errors import ConvkitError


def catalog_location(dataset: str, data_dir, sample: bool, max_images: int | None) -> dict:
    """Return the ``dataset.location`` record of a catalog dataset's test split."""
    return {"kind": "catalog", "dataset": dataset, "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
            "sample": bool(sample), "max_images": int(max_images) if max_images else None}


def folder_location(path) -> dict:
    """Return the ``dataset.location`` record of an image folder or path,label CSV."""
    return {"kind": "folder", "path": str(Path(path).resolve())}


def current_checksum(location) -> str | None:
    """Return the checksum the data at ``location`` has now, None when it cannot be found or read (or the record
    is not one this convkit wrote)."""
    if not isinstance(location, dict):
        return None
    try:
        if location.get("kind") == "folder" and isinstance(location.get("path"), str):
            return _folder_checksum(location["path"])
        if location.get("kind") == "catalog" and isinstance(location.get("dataset"), str) \
                and not location.get("sample"):
            data_dir = location.get("data_dir")
            checksum = _catalog_checksum(location["dataset"], data_dir if isinstance(data_dir, str) else None)
            n = location.get("max_images")
            return f"{checksum}:first-{n}-spread" if checksum and isinstance(n, int) and n > 0 else checksum
    except (ConvkitError, OSError):  # gone, unreadable: not flagged (see the module docstring)
        return None
    return None


@lru_cache(maxsize=64)
def _folder_checksum(path: str) -> str | None:
    from convkit.data.folder import list_labelled

    return list_labelled(path).checksum if Path(path).exists() else None


@lru_cache(maxsize=64)
def _catalog_checksum(dataset: str, data_dir: str | None) -> str | None:
    from convkit.data.sources import find_source

    found, _ = find_source(dataset, Path(data_dir) if data_dir else None)
    return found.checksum if found is not None else None


def forget() -> None:
    """Clear the checksums computed so far (a long-lived process that reads data which may change)."""
    _folder_checksum.cache_clear()
    _catalog_checksum.cache_clear()


def folder_of(evaluation: dict) -> str | None:
    """Return the image folder / CSV ``evaluation`` was measured on (``--data``), None for a catalog dataset."""
    location = (evaluation.get("dataset") or {}).get("location") if isinstance(evaluation.get("dataset"), dict) \
        else None
    return location.get("path") if isinstance(location, dict) and location.get("kind") == "folder" else None


def changed_data(evaluation: dict) -> str | None:
    """Return why ``evaluation``'s data is not the data at its location any more, None when it is (or when that
    cannot be told)."""
    ds = evaluation.get("dataset") if isinstance(evaluation.get("dataset"), dict) else {}
    recorded, location = ds.get("checksum"), ds.get("location")
    if not isinstance(recorded, str):
        return None
    now = current_checksum(location)
    if now is None or now == recorded:
        return None
    where = location.get("path") or location.get("data_dir") or location.get("dataset")
    return (f"the data it was measured on ({where}) changed since: images added, removed or rewritten "
            f"(checksum {recorded[:12]}…, now {now[:12]}…)")

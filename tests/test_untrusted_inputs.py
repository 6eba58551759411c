"""Hostile inputs, round four (issue 27, part B): caches checked by content, data keyed by content and stale
evaluations flagged, unreadable class folders, EXIF orientation, MNIST-C's one-channel corruptions, and memory
bounds checked before anything is allocated.

Expected values come from PIL + numpy, the published formulas and constants, or the input itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convkit.data import corruptions as C


# ---- item 5: caches are verified, never believed ----------------------------------------------------------------
def _tamper(path, change) -> None:
    doc = torch.load(path, weights_only=True)
    change(doc)
    torch.save(doc, path)  # same key, same stored hash: only the content differs


def test_an_altered_corrupted_split_cache_entry_is_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path))
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    expected = C.corrupt(images, "contrast", 2, 0)
    first, cached = C.corrupted_split(images, "sum-a", "contrast", 2, 0)
    assert not cached and np.array_equal(first, expected)
    path = C.cache_file(C.cache_key("sum-a", "contrast", 2, 0))
    _tamper(path, lambda d: d["tensors"]["images"].copy_(255 - d["tensors"]["images"]))
    capsys.readouterr()
    out, cached = C.corrupted_split(images, "sum-a", "contrast", 2, 0)
    assert not cached and np.array_equal(out, expected)
    assert "fails its content check" in capsys.readouterr().err
    again, cached = C.corrupted_split(images, "sum-a", "contrast", 2, 0)  # the rebuilt entry is good again
    assert cached and np.array_equal(again, expected)


def test_an_altered_decoded_data_cache_entry_is_rebuilt(tmp_path, monkeypatch, capsys):
    from convkit.data.load import load_dataset

    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path))
    clean = load_dataset("mnist", sample=True)
    expected = clean.test_images.clone()
    [entry] = (tmp_path / "tensors").glob("mnist-*.pt")
    _tamper(entry, lambda d: d["tensors"]["test_images"].copy_(255 - d["tensors"]["test_images"]))
    capsys.readouterr()
    again = load_dataset("mnist", sample=True)
    assert torch.equal(again.test_images, expected)
    assert "fails its content check" in capsys.readouterr().err
    # an entry written by another layout or holding foreign keys is rebuilt too, never fatal
    torch.save({"train_images": torch.zeros(1), "bogus": torch.ones(2)}, entry)
    assert torch.equal(load_dataset("mnist", sample=True).test_images, expected)
    assert "older or foreign layout" in capsys.readouterr().err

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


# ---- item 7: unreadable class folders, EXIF orientation -----------------------------------------------------------
def _folder(root, n_per_class: int = 2, classes: str = "abc", side: int = 8):
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _deny(monkeypatch, folder):
    """What ``chmod 000 folder`` does for a user other than root (these tests may run as root): listing it fails."""
    import os

    real = os.scandir

    def scandir(path="."):
        if os.path.abspath(os.fspath(path)) == os.path.abspath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    os.chmod(folder, 0)


def test_an_unreadable_class_folder_is_an_error_not_a_smaller_dataset(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from convkit.cli import main
    from test_bad_inputs import tiny_classifier

    data = _folder(tmp_path / "pics")
    model = tiny_classifier(tmp_path / "m.onnx", 3)
    _deny(monkeypatch, data / "b")
    try:
        r = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "--provider", "cpu",
                                      "--out", str(tmp_path / "out")])
    finally:
        (data / "b").chmod(0o755)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and "cannot be read" in lines[0] and str(data / "b") in lines[0], r.output
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29's codecs, as decode.py silences it
def test_exif_orientation_is_applied_and_counted(tmp_path):
    from PIL import Image

    from convkit.data.folder import list_labelled, load_image

    stored = np.zeros((6, 10), np.uint8)
    stored[0, :], stored[:, 0] = 255, 100  # asymmetric: a turn shows
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display" (EXIF 2.32, tag 274)
    (tmp_path / "d" / "x").mkdir(parents=True)
    Image.fromarray(stored).save(tmp_path / "d" / "x" / "rotated.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "d" / "x" / "upright.png")
    shown = np.rot90(stored, k=-1)  # what a viewer shows: the stored pixels turned clockwise
    got = load_image(tmp_path / "d" / "x" / "rotated.png", 1, shown.shape, None)
    assert np.array_equal(got[0], shown)
    assert np.array_equal(load_image(tmp_path / "d" / "x" / "upright.png", 1, stored.shape, None)[0], stored)
    files = list_labelled(tmp_path / "d")
    assert files.rotated == 1 and "1 of 2 images stored rotated" in files.source
    # the training reader (torchvision) applies it too
    from torchvision.io import ImageReadMode

    from convkit.data.decode import _read_image

    t = _read_image(tmp_path / "d" / "x" / "rotated.png", ImageReadMode.GRAY, (1, *shown.shape))
    assert np.array_equal(t[0].numpy(), shown)


# ---- item 6: data keyed by content --------------------------------------------------------------------------------
def test_the_data_key_changes_when_pixels_change_at_the_same_size(tmp_path):
    from PIL import Image

    from convkit.data.folder import list_labelled

    data = _folder(tmp_path / "d", classes="ab")
    before = list_labelled(data).checksum
    path = data / "a" / "0.bmp"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with_bmp = list_labelled(data).checksum
    size = path.stat().st_size
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(path)  # rewritten: same name, same size
    assert path.stat().st_size == size
    assert len({before, with_bmp, list_labelled(data).checksum}) == 3


# ---- item 11: bounds checked before allocating ------------------------------------------------------------------
def test_a_huge_severity_range_is_refused_before_it_is_built():
    import tracemalloc

    from convkit.errors import ConvkitError
    from convkit.robustness import parse_severities

    tracemalloc.start()
    for text in ("1-60000000", "1-3000000000", "-5-3", "5-1"):
        with pytest.raises(ConvkitError, match="--severities"):
            parse_severities(text)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20  # a 60-million list alone is 480 MB of pointers
    assert parse_severities("2-4") == (2, 3, 4)


def test_a_100000_class_model_never_builds_a_dense_confusion_matrix(tmp_path):
    """classification_metrics of a 100,000-class output on 40 images, under a 4 GiB address-space limit (the dense
    matrix alone is 74.5 GiB): the confused pairs, accuracy and per-class rows match a Counter over the images."""
    import collections
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    k, n = 100_000, 40
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, n)  # few true classes, so mistakes repeat
    preds = np.where(rng.random(n) < 0.5, labels, rng.integers(0, 6, n))
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "preds.npy", preds)
    code = ("import resource, json, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "import numpy as np\n"
            "from convkit.evaluate.accuracy import classification_metrics\n"
            f"labels, preds = np.load({str(tmp_path / 'labels.npy')!r}), np.load({str(tmp_path / 'preds.npy')!r})\n"
            f"scores = np.zeros((len(labels), {k}), np.float32)\n"
            "scores[np.arange(len(labels)), preds] = 5.0\n"
            f"m = classification_metrics(scores, labels, [f'c{{i}}' for i in range({k})])\n"
            "print(json.dumps({key: m[key] for key in ('accuracy', 'confused_pairs', 'per_class', 'confusion')}))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["accuracy"] == pytest.approx(float((labels == preds).mean()))
    mistakes = collections.Counter((int(t), int(p)) for t, p in zip(labels, preds) if t != p)
    support = collections.Counter(int(t) for t in labels)
    want = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert [(p["true"], p["predicted"], p["count"], p["share_of_true"]) for p in got["confused_pairs"]] == [
        (f"c{t}", f"c{p}", c, pytest.approx(c / support[t])) for (t, p), c in want]
    present = sorted(set(labels.tolist()) | set(preds.tolist()))
    assert [r["class"] for r in got["per_class"]] == [f"c{i}" for i in present]
    for r in got["per_class"]:
        i = int(r["class"][1:])
        right = int(((labels == i) & (preds == i)).sum())
        assert r["support"] == support[i] and r["recall"] == pytest.approx(right / support[i] if support[i] else 0)
    # the classes present are few: their matrix is kept, and it is the Counter's
    idx = {c: j for j, c in enumerate(present)}
    dense = np.zeros((len(present), len(present)), int)
    for t, p in zip(labels, preds):
        dense[idx[int(t)], idx[int(p)]] += 1
    assert got["confusion"] == dense.tolist()


def test_a_deflated_weights_zip_is_refused_by_its_declared_sizes(tmp_path):
    """A 100 MB member deflated to ~100 KB (torch.save stores its members): refused from the zip's directory,
    before anything is expanded; an archive larger than half the memory is refused the same way."""
    import tracemalloc
    import zipfile

    from convkit.archive_bounds import check_zip_sizes
    from convkit.errors import ConvkitError
    from convkit.user_model import read_state_dict

    bomb = tmp_path / "weights.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("archive/data/0", "w") as fh:
        for _ in range(100):
            fh.write(bytes(1 << 20))
    declared = zipfile.ZipFile(bomb).infolist()[0]
    assert declared.file_size == 100 << 20 and declared.compress_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(ConvkitError, match="would expand from") as err:
        read_state_dict(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and "\n" not in err.value.message
    plain = tmp_path / "small.pt"
    torch.save({"w": torch.zeros(1000)}, plain)
    with pytest.raises(ConvkitError, match="more than half the memory available"):
        check_zip_sizes(plain, "--weights", available=1000)
    assert set(read_state_dict(plain)) == {"w"}


def test_parity_images_are_capped_to_a_memory_budget(tmp_path, monkeypatch):
    """Export holds its parity images as float32: their number is capped so they fit PARITY_FLOAT_BYTES (here made
    small), and the data's description says so; 3×4096×4096 inputs (201 MB each) get 5 under the default 1 GiB."""
    import convkit.export.parity as P
    from convkit.export.pipeline import ExportSettings
    from convkit.export.user_export import load_user_data
    from convkit.user_model import DataContract

    assert P.parity_image_cap((3, 4096, 4096)) == (1 << 30) // (4 * 3 * 4096 * 4096) == 5
    data = _folder(tmp_path / "d", n_per_class=8, classes="ab", side=16)
    per_image = 4 * 3 * 16 * 16
    monkeypatch.setattr(P, "PARITY_FLOAT_BYTES", 5 * per_image + 7)
    contract = DataContract(None, str(data), ("a", "b"), (3, 16, 16), (0.5,) * 3, (0.5,) * 3)
    got = load_user_data(contract, ExportSettings(n_images=100), sample=False)
    assert got.images.shape == (5, 3, 16, 16) and "parity on 5 images" in got.source


# ---- item 4: the corruption figures are checked against their rows too --------------------------------------------
def test_an_edited_robustness_summary_or_row_is_caught():
    from convkit.consistency import robustness_problems
    from convkit.evaluate.robustness import CorruptionRow, RobustnessResult

    n, clean = 200, {"ort/fp32/cpu": 0.9, "ort/int8/cpu": 0.88}
    rows = [CorruptionRow(c, s, "ort", p, "cpu", acc, 0.05, acc - clean[f"ort/{p}/cpu"])
            for p, base in (("fp32", 0.8), ("int8", 0.7)) for c, s, acc in
            (("contrast", 1, base), ("contrast", 5, base - 0.3), ("rotate", 1, base - 0.1))]
    doc = RobustnessResult("MNIST-C", 0, ["contrast", "rotate"], [1, 5], n, "sum", clean, rows).to_dict()
    assert robustness_problems(doc) == []
    edited = {**doc, "summary": {**doc["summary"], "int8_minus_fp32": {"cpu": {"clean": 0.0, "corrupted": 0.0}}}}
    assert robustness_problems(edited) == ["robustness.summary differs from what its rows give"]
    doc["rows"][1]["delta_vs_clean"] = -0.65  # a −65-point "robustness result"
    assert any("contrast/5 ort/fp32/cpu change -0.65" in p for p in robustness_problems(doc))
    doc["rows"][1]["accuracy"] = 0.5012  # not a count of 200 images
    assert any("not a whole number of its 200 images" in p for p in robustness_problems(doc))

"""Hostile inputs, round three, where one table row is not enough: memory bounds measured in a subprocess under
``resource.setrlimit``, text injected into eval.md / summary.md / report.md, high-bit-depth images, per-class
rows of a 2000-class model, partial writes of the report, progress without a terminal, exit codes of several
items, messages (locks, CSVs), external data, devices.

Expected values come from PIL + numpy, plain onnxruntime, or the input itself; never from convkit's own code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convkit.cli import main
from test_bad_inputs import hostile_files, tiny_classifier

REPO = Path(__file__).resolve().parent.parent
INJECTION = '<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) a|b\n# heading'


def run_cli(*args, cwd: Path | None = None):
    """Invoke the CLI in process (from ``cwd`` when given); returns click's Result."""
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The hostile files of the bad-input table (models, folders, CSVs, pickles) in a fresh folder."""
    tmp = tmp_path_factory.mktemp("hostile")
    hostile_files(tmp)
    return tmp


# ------------------------------------------------------------------------------------------ memory bounds
LIMIT_GIB = 4  # address space of the subprocess: what torch + onnxruntime need, far from what the inputs ask


def _limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_GIB} << 30, {LIMIT_GIB} << 30))\n"
            "from convkit.cli import main\n"
            f"sys.argv = ['convkit', *{args!r}]\n"
            "main()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_extreme_aspect_ratio_folder_is_refused_within_a_memory_bound(files):
    """16 PNGs of 200000×1 px (72 KB on disk) resized to a shorter side of 224 would be 45 G pixels each: under a
    4 GiB address-space limit the command refuses the first by name (before round three: MemoryError, exit 70)."""
    proc = _limited(["evaluate", str(files / "c3.onnx"), "--data", str(files / "wide"), "--resize", "224",
                     "--no-latency", "--threads", "1"], files)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "200000×1 pixels" in lines[0] and ".png" in lines[0], lines


def test_huge_server_qps_is_refused_within_a_memory_bound(tmp_path):
    """--server-qps 1e9 (quick: 2e9 pre-generated queries, 24 GB before the kernel killed it) and 1e6 on a full
    run (6e8 queries) are refused in one line under a 4 GiB limit, before any model is read."""
    model = tiny_classifier(tmp_path / "m.onnx", 3)
    for qps, quick in (("1000000000", ["--quick"]), ("1000000", [])):
        proc = _limited(["evaluate", str(model), "--dataset", "cifar10", "--scenario", "server", *quick,
                         "--server-qps", qps], tmp_path)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "--server-qps" in lines[0], lines
    # the bound follows the memory there is: 1,000 QPS for 600 s fits 4 GiB, not 64 MiB
    from convkit.errors import ConvkitError
    from convkit.evaluate.serving.scenarios import LOADGEN_BYTES_PER_QUERY, check_server_qps

    check_server_qps(1000, quick=False, available=4 << 30)
    need = 1000 * 600 * LOADGEN_BYTES_PER_QUERY
    with pytest.raises(ConvkitError, match="--server-qps"):
        check_server_qps(1000, quick=False, available=need)  # half of it is the most a run may take


# ------------------------------------------------------------------------------------------ images
def test_sixteen_bit_png_and_float_tiff_convert_to_8_bit(tmp_path):
    """A 16-bit grayscale PNG scales by 257 and a float TIFF in 0..1 by 255 (numpy, rounded); before round three
    the PNG decoded to white and the TIFF to 0/1. A float TIFF outside 0..1 is refused by name."""
    from convkit.data.folder import load_image
    from convkit.errors import DataError

    ramp16 = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    got = load_image(tmp_path / "g16.png", 1, (16, 16), None)
    assert np.array_equal(got[0], np.arange(256, dtype=np.uint8).reshape(16, 16))
    rgb = load_image(tmp_path / "g16.png", 3, (16, 16), None)
    assert np.array_equal(rgb[1], got[0])  # grey to RGB: the same value in every channel

    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tiff")
    got = load_image(tmp_path / "f.tiff", 1, (8, 8), None)
    assert np.array_equal(got[0], np.rint(ramp.astype(np.float64) * 255).astype(np.uint8))

    Image.fromarray(ramp * 1000, mode="F").save(tmp_path / "big.tiff")
    with pytest.raises(DataError, match=r"big\.tiff has floating-point pixels outside 0\.\.1"):
        load_image(tmp_path / "big.tiff", 1, (8, 8), None)


def test_resized_size_is_bounded_by_name(tmp_path):
    """A 10000×1 image passes the decoded bound but its resize to a 224 shorter side would not: refused by name."""
    from convkit.data.folder import load_image
    from convkit.errors import DataError

    Image.fromarray(np.zeros((1, 10_000), np.uint8)).save(tmp_path / "thin.png")
    with pytest.raises(DataError, match=r"thin\.png would be, resized to a shorter side of 224, 2240000×224"):
        load_image(tmp_path / "thin.png", 3, (224, 224), 224)


def test_bom_csv_is_read_and_duplicates_are_counted(files, tmp_path):
    """A UTF-8 CSV with a byte-order mark reads as without (before: `\\ufeffpath` was taken for an image); a row
    repeated word for word is read once and the data line says how many were."""
    csv = files / "bom.csv"
    csv.write_text("\ufeffpath,label\npics/a/0.png,a\npics/b/1.png,b\npics/c/2.png,c\npics/a/0.png,a\n",
                   encoding="utf-8")
    r = run_cli("evaluate", files / "c3.onnx", "--data", csv, "--no-latency", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert doc["dataset"]["n"] == 3
    assert "1 duplicate row read once" in r.output


# ------------------------------------------------------------------------------------------ text in outputs
def _assert_inert(md: str) -> None:
    """No HTML tag, link or raw newline from INJECTION survives; every table keeps its column count."""
    assert "<script" not in md and "<img" not in md, md
    assert not re.search(r"(?<!\\)\]\(javascript:", md) and "\n# heading" not in md
    assert "&lt;script&gt;" in md  # shown as text, not dropped
    tables, width = [], None
    for ln in md.splitlines():
        if ln.startswith("|"):
            cells = len(re.split(r"(?<!\\)\|", ln.strip())) - 2
            width = cells if width is None else width
            assert cells == width, ln
            tables.append(ln)
        else:
            width = None
    assert tables


def test_eval_md_escapes_metadata_and_class_names(files, tmp_path):
    """ONNX metadata and --classes names with HTML, a javascript: link, a pipe and a newline render as text in
    eval.md; a 10 MB metadata value is cut when read and its table cells stay short."""
    model = tiny_classifier(tmp_path / "m.onnx", 3, metadata={"experiment": INJECTION, "notes": "x" * 10_000_000})
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb|<b>x</b>\n[c](javascript:alert(4))\n")
    for i in range(3):
        (tmp_path / "pics" / str(i)).mkdir(parents=True)
        shutil.copy(files / "pics" / "abc"[i] / f"{i}.png", tmp_path / "pics" / str(i) / "0.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f'pics/{i}/0.png,"{n}"\n' for i, n in
                                            enumerate(["a", "b|<b>x</b>", "[c](javascript:alert(4))"])))
    r = run_cli("evaluate", model, "--data", csv, "--classes", classes, "--no-latency", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    md = (tmp_path / "o" / "eval.md").read_text()
    _assert_inert(md)
    assert "[c\\](javascript:alert(4))" in md  # the class name's characters, escaped
    assert max(len(ln) for ln in md.splitlines()) < 5000
    assert (tmp_path / "o" / "eval.json").stat().st_size < 2_000_000  # not the 10 MB value


def test_summary_and_report_escape_run_folder_strings(sample_runs, tmp_path):
    """A failure message and a run folder name with HTML, a link, a pipe and a newline render as text in
    summary.md and report.md (report.html escaped them already)."""
    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    odd = suite / "x<script>alert(1)<|script>"
    odd.mkdir()
    shutil.copy(sample_runs["t1-fcn"] / "metrics.json", odd / "metrics.json")
    (suite / "t1-fcn" / "failure.json").write_text(json.dumps(
        {"schema": "convkit.failure/1", "experiment": "t1-fcn", "stage": "evaluate", "error": INJECTION}))
    r = run_cli("summarize", suite)
    assert r.exit_code == 0, r.output
    _assert_inert((suite / "summary.md").read_text())
    assert "x&lt;script&gt;alert(1)&lt;\\|script&gt;" in (suite / "summary.md").read_text()
    r = run_cli("report", suite)
    assert r.exit_code == 0, r.output
    report = (suite / "report.md").read_text()
    assert "<script" not in report and not re.search(r"(?<!\\)\]\(javascript:", report)


def test_summary_says_unreadable_for_a_string_where_a_number_belongs(sample_runs, tmp_path):
    """metrics.json's summary values hand-edited to strings: summarize does not stop (before round three:
    ValueError, exit 70); since round four the edit is caught (the summary block no longer repeats the file's
    figures) and the row is held back as EDITED; a value that does not fit its format still reads unreadable."""
    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    path = suite / "t1-fcn" / "metrics.json"
    doc = json.loads(path.read_text())
    doc["summary"]["parameters"] = "lots"
    path.write_text(json.dumps(doc))
    r = run_cli("summarize", suite)
    assert r.exit_code == 0, r.output
    row = next(ln for ln in (suite / "summary.md").read_text().splitlines() if "| t1-fcn |" in ln)
    assert "EDITED" in row and "lots" not in row
    held = json.loads((suite / "summary.json").read_text())["held_back"]["t1-fcn"][0]
    assert "summary.parameters 'lots'" in held
    from convkit.summary import _cell

    assert _cell("lots", ",") == "unreadable (lots)"


# ------------------------------------------------------------------------------------------ many classes
def _macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Macro F1 over the classes that are true or predicted at least once (scikit-learn's definition)."""
    scores = []
    for c in sorted(set(labels.tolist()) | set(preds.tolist())):
        tp = int(((preds == c) & (labels == c)).sum())
        p = tp / max(int((preds == c).sum()), 1)
        r = tp / max(int((labels == c).sum()), 1)
        scores.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return float(np.mean(scores))


def test_two_thousand_classes_on_few_images_write_rows_for_the_classes_present(files, tmp_path):
    """A 2000-class model on 6 images: per-class rows and the confusion matrix hold the classes present only
    (before: 2000 rows and a 2000² matrix, 112 MB for 50 images); macro F1 over those, as scikit-learn defines it."""
    import onnxruntime as ort

    k = 2000
    model = tiny_classifier(tmp_path / "m.onnx", 3, classes=k)
    names = ["a", "b", "c"] + [f"class{i}" for i in range(3, k)]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    r = run_cli("evaluate", model, "--data", files / "pics", "--classes", tmp_path / "classes.txt", "--no-latency",
                "--mean", "0.5", "--std", "0.25", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    acc = doc["accuracy"][0]
    labels = np.asarray(_folder_labels(files))
    preds = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"x": _folder_inputs(files)})[0].argmax(axis=1)
    present = sorted(set(labels.tolist()) | set(preds.tolist()))
    assert len(present) < 10
    assert [c["class"] for c in acc["per_class"]] == [names[i] for i in present]
    assert acc["confusion_classes"] == [names[i] for i in present]
    assert np.asarray(acc["confusion"]).sum() == 6
    assert acc["accuracy"] == pytest.approx(float((preds == labels).mean()))
    assert acc["macro_f1"] == pytest.approx(_macro_f1(labels, preds))
    assert (tmp_path / "o" / "eval.json").stat().st_size < 200_000
    assert len((tmp_path / "o" / "eval.md").read_text().splitlines()) < 150


def _folder_files(files: Path) -> list[Path]:
    """The pics folder in ImageFolder order: classes sorted, then files sorted."""
    root = files / "pics"
    return [f for c in sorted(p.name for p in root.iterdir()) for f in sorted((root / c).iterdir())]


def _folder_labels(files: Path) -> list[int]:
    return ["abc".index(f.parent.name) for f in _folder_files(files)]


def _folder_inputs(files: Path) -> np.ndarray:
    """The model input of the pics folder as torchvision would make it: shorter side to 8 (bilinear), center
    crop 8×8, /255, (x - 0.5) / 0.25, NCHW float32."""
    out = []
    for f in _folder_files(files):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        size = (8, int(8 * h / w)) if w <= h else (int(8 * w / h), 8)
        a = np.asarray(im.resize(size, Image.BILINEAR), np.float32) / 255.0
        top, left = int(round((a.shape[0] - 8) / 2)), int(round((a.shape[1] - 8) / 2))
        out.append(((a[top:top + 8, left:left + 8] - 0.5) / 0.25).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


# ------------------------------------------------------------------------------------------ files and exits
def test_report_figure_on_a_full_disk_is_one_line_and_keeps_the_old_file(sample_runs, tmp_path, monkeypatch):
    """savefig failing half-way (ENOSPC after some bytes, as on a 28 KB disk) leaves every figure as it was, no
    temporary file, and the report says so in one line, exit 2 (before round three: exit 70 and a 0-byte PNG)."""
    import errno

    from matplotlib.figure import Figure

    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    assert run_cli("report", suite).exit_code == 0
    before = {p.name: p.read_bytes() for p in (suite / "report").iterdir()}
    real = Figure.savefig

    def full_disk(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    r = run_cli("report", suite)
    monkeypatch.setattr(Figure, "savefig", real)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and "No space left on device" in lines[0] and "--out" not in lines[0], lines
    assert {p.name: p.read_bytes() for p in (suite / "report").iterdir()} == before


def test_one_failing_item_of_several_exits_1(sample_runs, files, tmp_path):
    """export --all and evaluate of several models: a bad item is reported on its line, the others run, exit 1
    (the README's code for one item of several; before round three: 2)."""
    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-broken")
    (suite / "t1-broken" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    r = run_cli("export", "--all", suite, "--n-images", "32")
    assert r.exit_code == 1, r.output
    assert (suite / "t1-fcn" / "model.onnx").is_file()
    (tmp_path / "notes.onnx").write_text("not a model")
    r = run_cli("evaluate", suite / "t1-fcn", tmp_path / "notes.onnx", "--no-latency")
    assert r.exit_code == 1, r.output
    assert (suite / "t1-fcn" / "eval.json").is_file()


def test_progress_lines_without_a_terminal(tmp_path):
    """Without a terminal (CliRunner's stdout, like CI logs or nohup) every epoch prints one plain line; --quiet
    prints none (before round three: nothing at all without a terminal)."""
    args = ["train", "t1-fcn", "--sample", "--epochs", "2", "--device", "cpu", "--batch-size", "512"]
    r = run_cli(*args, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert [ln.split("  ")[0] for ln in r.output.splitlines() if " epoch " in ln] == ["t1-fcn epoch 1/2",
                                                                                      "t1-fcn epoch 2/2"]
    r = run_cli(*args, "--out", tmp_path / "b", "--quiet")
    assert r.exit_code == 0 and " epoch " not in r.output


def test_failed_run_leaves_no_empty_suite_folder(tmp_path):
    """A run that fails before training (no data) leaves neither <out>/<suite>/ nor <out>/ behind."""
    r = run_cli("train", "t1-fcn", "--device", "cpu", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert not (tmp_path / "o").exists()
    r = run_cli("train-all", "--only", "t1-fcn", "--device", "cpu", "--data-dir", tmp_path / "nowhere", "--out",
                tmp_path / "p", "--quiet")
    assert r.exit_code == 1 and "1 experiment(s) failed" in r.output
    assert not (tmp_path / "p").exists()


def test_lock_from_another_host_names_the_file_and_the_way_out(sample_runs, tmp_path):
    """A lock written by a process on another host is never taken over: the error names the lock file and says
    how to clear it."""
    from convkit.artifacts import lock_path

    run = tmp_path / "seed-sample" / "t1-fcn"
    shutil.copytree(sample_runs["t1-fcn"], run)
    lock = lock_path(run)
    lock.write_text(f"1\n{socket.gethostname()}-elsewhere\nconvkit train t1-fcn")
    r = run_cli("export", run, "--n-images", "32")
    assert r.exit_code == 2, r.output
    assert str(lock) in r.output and "another host is never taken over" in r.output
    assert lock.is_file()


def test_external_data_resolves_beside_the_model(files, tmp_path):
    """A model whose weights are in weights.bin beside it evaluates from any working directory (before round three:
    "truncated or corrupt" unless run from its folder), with the accuracy plain onnxruntime gives."""
    import onnxruntime as ort

    r = run_cli("evaluate", files / "external" / "m.onnx", "--data", files / "pics", "--no-latency", "--mean", "0.5",
                "--std", "0.25", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    session = ort.InferenceSession(str(files / "external" / "m.onnx"), providers=["CPUExecutionProvider"])
    preds = session.run(None, {"x": _folder_inputs(files)})[0].argmax(axis=1)
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(float((preds == np.asarray(_folder_labels(files))).mean()))


def test_a_single_devices_entry_is_honoured():
    """--devices with one entry is the device train-all uses (before round three it was dropped); one that
    contradicts --device is refused."""
    from convkit.commands import single_device
    from convkit.errors import ConvkitError

    assert single_device("cpu", 1, None) == "cpu"
    assert single_device(None, 1, "cpu") == "cpu"
    with pytest.raises(ConvkitError, match="contradict"):
        single_device("cpu", 1, "cuda")


def test_metadata_is_capped_when_read(tmp_path):
    """A file with 100 metadata entries, a 300-character key and a 10 MB value reads back as its first 64
    entries, without the long key, the long value cut to 256 KiB and marked; inspect_model reads the same."""
    from convkit.evaluate.model_io import Overrides, inspect_model
    from convkit.onnx_meta import MAX_METADATA_VALUE, TRUNCATED, read_metadata

    meta = {"class_names": "y" * 10_000_000, "k" * 300: "v", **{f"key{i:03d}": str(i) for i in range(100)}}
    model = tiny_classifier(tmp_path / "m.onnx", 3, metadata=meta)
    read = read_metadata(model)
    # the first 64 entries: class_names, the long key (skipped), key000 … key061
    assert len(read) == 63 and "k" * 300 not in read and "key061" in read and "key062" not in read
    assert read["class_names"] == "y" * MAX_METADATA_VALUE + TRUNCATED
    spec = inspect_model(model, Overrides(folder="pics", folder_classes=["a", "b", "c"]))
    assert spec.metadata == read and spec.sources["classes"] != "metadata"  # a cut list is ignored

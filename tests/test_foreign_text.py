"""Foreign text (issue 27, item 3): summary_columns labels, bidirectional controls and newlines in names reach
summary.md, eval.md, report.md, report.html and the terminal as the characters they are, never as markup,
reordered text or a forged line. Expected strings are written out by hand from the Unicode code points."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from convkit.cli import main
from convkit.text import cap, md_text, show_controls, term
from test_bad_inputs import tiny_classifier

# Every bidirectional control the Unicode bidi algorithm acts on (UAX #9): embeddings, overrides, isolates, marks.
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
        "\u200f", "\u061c"]
RLO = "\u202e"


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _no_bidi(text: str) -> bool:
    return not any(c in text for c in BIDI)


@pytest.mark.parametrize("char", BIDI)
def test_each_bidi_control_is_shown_as_its_code_point(char):
    shown = f"<U+{ord(char):04X}>"
    assert show_controls(f"a{char}b") == f"a{shown}b"
    assert cap(f"a{char}b") == f"a{shown}b" and term(f"a{char}b") == f"a{shown}b"
    assert md_text(f"a{char}b") == f"a&lt;U+{ord(char):04X}&gt;b"


def test_terminal_text_keeps_a_name_on_one_line():
    assert term("runs/a\nerror: forged\r\x1b[2Jx") == "runs/a\\nerror: forged\\r [2Jx"
    assert cap("a\x85b\x9bc") == "a b c"  # C1 controls (NEL, CSI) too


def test_summary_columns_labels_from_a_file_are_escaped(sample_runs, tmp_path):
    suite = tmp_path / "seed-sample"
    run = shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    doc = json.loads((run / "metrics.json").read_text())
    doc["summary_columns"] = [*doc["summary_columns"], ["<script>alert(1)</script>|x", "parameters", "d"],
                              [f"a{RLO}exe.live", "test_acc", ".4f"]]
    (run / "metrics.json").write_text(json.dumps(doc))
    r = _cli("summarize", suite)
    assert r.exit_code == 0, r.output
    md = (suite / "summary.md").read_text()
    assert "<script" not in md and _no_bidi(md), md
    header = next(ln for ln in md.splitlines() if ln.startswith("| row |"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in header and "a&lt;U+202E&gt;exe.live" in header
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    widths = {len(re.split(r"(?<!\\)\|", ln.strip())) for ln in rows[:3]}
    assert len(widths) == 1, rows[:3]  # the label's pipe did not add a column


def test_bidi_in_run_names_and_messages_is_inert_in_summary_and_report(sample_runs, tmp_path):
    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    odd = suite / f"a{RLO}fdp.exe"
    odd.mkdir()
    shutil.copy(sample_runs["t1-fcn"] / "metrics.json", odd / "metrics.json")
    (suite / "t1-fcn" / "failure.json").write_text(json.dumps(
        {"schema": "convkit.failure/1", "experiment": "t1-fcn", "stage": "evaluate", "error": f"x{RLO}gnp.exe"}))
    r = _cli("summarize", suite)
    assert r.exit_code == 0, r.output
    summary = (suite / "summary.md").read_text()
    assert _no_bidi(summary) and "a&lt;U+202E&gt;fdp.exe" in summary  # shown, not dropped
    r = _cli("report", suite)
    assert r.exit_code == 0, r.output
    for name in ("report.md", "report.html"):
        assert _no_bidi((suite / name).read_text()), name
    assert _no_bidi(r.output)


def test_eval_md_and_terminal_show_bidi_in_metadata_class_names_and_out(tmp_path):
    model = tiny_classifier(tmp_path / "m.onnx", 3, metadata={"experiment": f"m{RLO}exe.live"})
    classes = tmp_path / "classes.txt"
    classes.write_text(f"a\nb{RLO}c\nd\u2066e\n")
    from PIL import Image
    for i in range(3):
        (tmp_path / "pics" / str(i)).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "pics" / str(i) / "0.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"pics/{i}/0.png,{n}\n" for i, n in
                                            enumerate(["a", f"b{RLO}c", "d\u2066e"])))
    out = tmp_path / f"o\nerror: forged {RLO}line"
    r = _cli("evaluate", model, "--data", csv, "--classes", classes, "--no-latency", "--out", out)
    assert r.exit_code == 4, r.output  # a random 3-image model gives one class for all: degenerate, still written
    md = (out / "eval.md").read_text()
    assert _no_bidi(md) and "b&lt;U+202E&gt;c" in md
    assert _no_bidi(r.output)
    assert not any(ln.startswith("error: forged") for ln in r.output.splitlines()), r.output
    assert "o\\nerror: forged <U+202E>line" in r.output

"""Bad input through the command line, as a careless or hostile user gives it: every case is one line on stderr
naming the problem, exit 2, no traceback, and the run folder beside it unchanged (checked by checksum).

New commands and options should add their cases to CASES."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from convkit.cli import main

RUN = "{runs}/seed-sample/t1-fcn"
TRAIN = ["--sample", "--device", "cpu", "--out", "{runs}", "--quiet"]

# (what, args, needle in the error line); "{runs}", "{run}", "{tmp}" are filled in per test.
CASES = [
    ("unknown experiment", ["train", "t3-k6", *TRAIN], "did you mean"),
    ("epochs not an integer", ["train", "t1-fcn", "--epochs", "1e20", *TRAIN], "--epochs"),
    ("absurd epochs", ["train", "t1-fcn", "--epochs", "100000", *TRAIN], "--epochs"),
    ("infinite learning rate", ["train", "t1-fcn", "--lr", "inf", *TRAIN], "--lr"),
    ("negative learning rate", ["train", "t1-fcn", "--lr", "-1", *TRAIN], "--lr"),
    ("a run is already there", ["train", "t1-fcn", *TRAIN], "already holds a run"),
    ("resume and overwrite", ["train", "t1-fcn", "--resume", "--overwrite", *TRAIN], "contradict"),
    ("missing data folder", ["train", "t1-fcn", "--device", "cpu", "--data-dir", "{tmp}/nowhere", "--out",
                             "{tmp}/other"], "does not exist"),
    ("bad --max-images", ["train", "t1-fcn", "--max-images", "lots", *TRAIN], "--max-images"),
    ("CUDA asked for, none here", ["train", "t1-fcn", "--sample", "--device", "cuda", "--out", "{tmp}/o"], "cuda"),
    ("unknown suite", ["train-all", "--suite", "nope", *TRAIN], "unknown suite"),
    ("glob matches nothing", ["train-all", "--only", "zzz*", *TRAIN], "matches no experiment"),
    ("suite already trained", ["train-all", "--only", "t1-fcn", *TRAIN], "already holds a run"),
    ("export of a missing folder", ["export", "{tmp}/nope"], "not found"),
    ("export of a garbage checkpoint", ["export", "--checkpoint", "{tmp}/garbage.pt"], "is corrupt"),
    ("export of a malicious pickle", ["export", "--checkpoint", "{tmp}/evil.pt"], "never executes"),
    ("export gate out of range", ["export", "{run}", "--max-disagreement", "fp32=-1"], "--max-disagreement"),
    ("export: nothing given", ["export"], "nothing to export"),
    ("evaluate a text file", ["evaluate", "{tmp}/notes.onnx", "--dataset", "mnist"], "notes.onnx"),
    ("evaluate with a NaN mean", ["evaluate", "{run}", "--mean", "nan", "--no-latency"], "--mean"),
    ("evaluate with an unknown gate", ["evaluate", "{run}", "--max-accuracy-drop", "int4=1"], "unknown precision"),
    ("evaluate with a bad scenario", ["evaluate", "{run}", "--scenario", "bogus"], "--scenario"),
    ("evaluate: no model", ["evaluate"], "no model"),
    ("evaluate: frost (not generated)", ["evaluate", "{run}", "--corruptions", "frost", "--no-latency"],
     "frost is not generated"),
    ("evaluate: bad severities", ["evaluate", "{run}", "--corruptions", "all", "--severities", "0-9"], "--severities"),
    ("train-all: bad severities", ["train-all", "--only", "t1-fcn", "--corruptions", "contrast", "--severities", "x",
                                   *TRAIN], "--severities"),
    ("summarize a missing folder", ["summarize", "{tmp}/nope"], "not found"),
    ("report of an empty folder", ["report", "{tmp}/empty"], "{tmp}/empty"),
    ("unknown command", ["trian", "t1-fcn"], "trian"),
]


class _Evil:
    """Unpickling this would create a file: a checkpoint that asks to run code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained and exported run, a garbage checkpoint, a text file named .onnx and an empty folder."""
    tmp = tmp_path_factory.mktemp("bad")
    runs = tmp / "runs"
    runner = CliRunner()
    r = runner.invoke(main, ["train", "t1-fcn", "--sample", "--epochs", "1", "--device", "cpu", "--out", str(runs),
                             "--quiet", "--batch-size", "256"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", RUN.format(runs=runs), "--n-images", "64"])
    assert r.exit_code == 0, r.output
    (tmp / "garbage.pt").write_bytes(b"\x80\x04garbage")
    torch.save({"model": _Evil(tmp / "pwned"), "config": {}}, tmp / "evil.pt")
    (tmp / "notes.onnx").write_text("this is not a model\n" * 10)
    (tmp / "empty").mkdir()
    return {"tmp": str(tmp), "runs": str(runs), "run": RUN.format(runs=runs)}


@pytest.mark.parametrize("what, args, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(world, what, args, needle):
    run = Path(world["run"])
    before = _digests(run.parent)
    r = CliRunner().invoke(main, [a.format(**world) for a in args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, (what, r.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, r.output)
    assert needle.format(**world) in lines[0], (what, lines[0])
    assert "Traceback" not in r.output
    assert _digests(run.parent) == before, what
    assert not (Path(world["tmp"]) / "pwned").exists()  # the malicious pickle never ran

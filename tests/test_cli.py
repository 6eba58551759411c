"""The command line: listing, training, train-all and one-line errors with distinct exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from convkit import __version__
from convkit.cli import main


def run(*args, **kw):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, **kw)


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_list_shows_all_21_seed_counts():
    r = run("list", "--suite", "seed")
    lines = [ln for ln in r.output.splitlines()[1:] if ln.strip()]
    assert r.exit_code == 0 and len(lines) == 21
    assert "23,520,842" in r.output and "t6-bottleneck" in r.output and "2,749,786" in r.output


@pytest.mark.parametrize("args, code, needle", [
    (["train", "t3-k6"], 2, "did you mean"),
    (["train", "t1-fcn", "--epochs", "0"], 2, "--epochs must be positive"),
    (["train", "t1-fcn", "--batch-size", "0"], 2, "--batch-size must be positive"),
    (["train", "t1-fcn", "--lr", "-1"], 2, "--lr must be positive"),
    (["train-all", "--only", "zzz*"], 2, "matches no experiment"),
    (["train-all", "--suite", "nope"], 2, "unknown suite"),
])
def test_errors_are_one_line_with_exit_code(tmp_path, args, code, needle):
    r = CliRunner().invoke(main, [*args, "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == code, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1


def test_missing_data_exit_2_without_traceback(tmp_path):
    # a real subprocess: what a user sees, including that no traceback leaks
    env = {"CONVKIT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = ("import torchvision.datasets as d, sys; d.MNIST.download = lambda self: (_ for _ in ()).throw(OSError('offline'));"
            "from convkit.cli import main; sys.argv=['convkit','train','t1-fcn','--device','cpu','--data-dir',"
            f"'{tmp_path / 'empty'}','--out','{tmp_path / 'runs'}']; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert "error: mnist not found" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_train_on_sample_then_train_all_summary(tmp_path):
    r = run("train", "t1-fcn", "--sample", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--quiet")
    assert r.exit_code == 0 and "t1-fcn: test acc" in r.output
    r = run("train-all", "--only", "t1-fcn", "--only", "t5-custom-conv", "--sample", "--epochs", "1", "--device",
            "cpu", "--out", str(tmp_path), "--quiet")
    assert r.exit_code == 0, r.output
    summary = (tmp_path / "seed-sample" / "summary.md").read_text()
    assert "Table 1 — MNIST" in summary and "Table 5" in summary and "(0.9834)" in summary
    assert "109,386" in summary and "268,650" in summary


def test_train_all_goes_on_past_a_failure_and_exits_1(tmp_path, monkeypatch):
    import convkit.train.suite_run as suite_run
    from convkit.errors import ConvkitError

    real = suite_run.train_experiment

    def fail_fcn(cfg, **kw):
        if cfg.experiment == "t1-fcn":
            raise ConvkitError("synthetic failure")
        return real(cfg, **kw)

    monkeypatch.setattr(suite_run, "train_experiment", fail_fcn)
    r = CliRunner().invoke(main, ["train-all", "--only", "t1-*", "--sample", "--epochs", "1", "--device", "cpu",
                                  "--out", str(tmp_path), "--quiet", "--batch-size", "256"])
    assert r.exit_code == 1
    assert "t1-fcn FAILED: synthetic failure" in r.output
    summary = (tmp_path / "seed-sample" / "summary.md").read_text()
    assert "FAILED" in summary and "t1-residual-cnn" in summary and "t1-simple-cnn" in summary

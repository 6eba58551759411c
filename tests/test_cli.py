"""The command line: listing, training, train-all and one-line errors with distinct exit codes."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

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
    ckpt = tmp_path / "seed-sample" / "t1-fcn" / "checkpoint.pt"
    before = ckpt.read_bytes()
    args = ["train-all", "--only", "t1-fcn", "--only", "t5-custom-conv", "--sample", "--epochs", "1", "--device",
            "cpu", "--out", str(tmp_path), "--quiet"]
    r = run(*args)  # t1-fcn's folder holds the run just trained: refused before any work, nothing touched
    assert r.exit_code == 2 and "already holds a run" in r.output and "--overwrite" in r.output, r.output
    assert ckpt.read_bytes() == before and not (tmp_path / "seed-sample" / "t5-custom-conv").exists()
    r = run(*args, "--overwrite")
    assert r.exit_code == 0, r.output
    summary = (tmp_path / "seed-sample" / "summary.md").read_text()
    assert "Table 1 — MNIST" in summary and "Table 5" in summary
    assert re.search(r"\(0\.9834: (above|below|within noise)\)", summary), summary  # the study's figure, judged
    assert "109,386" in summary and "268,650" in summary


def test_train_all_goes_on_past_a_failure_and_exits_1(tmp_path, monkeypatch):
    """Any exception of one experiment (here a RuntimeError, as an out-of-memory would be) is recorded in its run
    folder and the summary; the others run; exit 1. `summarize` rebuilds the same summary from disk alone."""
    import convkit.pipeline as pipeline

    real = pipeline.train_experiment

    def fail_fcn(cfg, **kw):
        if cfg.experiment == "t1-fcn":
            Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(cfg, **kw)

    monkeypatch.setattr(pipeline, "train_experiment", fail_fcn)
    r = CliRunner().invoke(main, ["train-all", "--only", "t1-*", "--sample", "--epochs", "1", "--device", "cpu",
                                  "--out", str(tmp_path), "--quiet", "--batch-size", "256", "--no-evaluate"])
    assert r.exit_code == 1, r.output
    assert "t1-fcn FAILED in train: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in r.output
    suite = tmp_path / "seed-sample"
    summary = (suite / "summary.md").read_text()
    assert "FAILED in train: RuntimeError" in summary and "t1-residual-cnn" in summary and "t1-simple-cnn" in summary
    failure = json.loads((suite / "t1-fcn" / "failure.json").read_text())
    assert failure["schema"] == "convkit.failure/1" and failure["stage"] == "train"

    (suite / "summary.md").unlink()
    r = CliRunner().invoke(main, ["summarize", str(suite)])
    assert r.exit_code == 0, r.output
    rebuilt = (suite / "summary.md").read_text()
    assert rebuilt.splitlines()[2:] == summary.splitlines()[3:]  # the same, less train-all's wall-time line
    assert json.loads((suite / "summary.json").read_text())["failed"] == ["t1-fcn"]


def test_unknown_schema_version_is_one_line_exit_2(tmp_path):
    run = tmp_path / "seed" / "t1-fcn"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"schema": "convkit.metrics/7", "test_acc": 0.5}))
    r = CliRunner().invoke(main, ["summarize", str(tmp_path / "seed")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "convkit.metrics/7" in lines[0] and "convkit.metrics/1" in lines[0]


def test_unexpected_exception_is_one_line_and_a_log(tmp_path, monkeypatch):
    """A bug never shows a bare traceback: one line naming the log file that holds it, exit 70."""
    import convkit.summary as summary

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(summary, "write_summary", boom)
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(main, ["summarize", str(tmp_path)])
    assert r.exit_code == 70 and "Traceback" not in r.output
    line = r.output.strip()
    assert "\n" not in line and "ZeroDivisionError: division by zero" in line and "this is a bug" in line
    log = Path(line.rsplit("the log at ", 1)[1])
    assert log.is_file() and "Traceback" in log.read_text() and "boom" in log.read_text()


def test_help_does_not_import_torch():
    code = "import sys; from convkit.cli import main; sys.argv=['convkit','--help']\ntry:\n main()\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False False"
    for name in ("train", "train-all", "export", "evaluate", "summarize", "list"):
        assert name in p.stdout


def test_export_and_evaluate_of_several_go_on_past_an_unexpected_error(tmp_path, monkeypatch):
    """An out-of-memory or runtime error of one item (not a ConvkitError) is reported as `Type: first line` and
    the other items still run; the command exits non-zero at the end."""
    import convkit.evaluate.run as eval_run
    import convkit.export.pipeline as export_pipeline

    calls = []

    def flaky_export(run, settings):
        calls.append(Path(run).name)
        if Path(run).name == "a":
            raise RuntimeError("CUDA error: out of memory\ndetails")
        return {"experiment": Path(run).name, "out_dir": str(run), "precisions": {"fp32": {"parity": {
            "max_abs_diff": 0.0, "argmax_agreement": 1.0}}}}

    monkeypatch.setattr(export_pipeline, "export_run", flaky_export)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    r = CliRunner().invoke(main, ["export", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 1 and calls == ["a", "b"], r.output
    assert "RuntimeError: CUDA error: out of memory" in r.output and "b: fp32 max|Δ|" in r.output

    def flaky_eval(path, opts):
        raise RuntimeError("ORT: CUDNN failure 4")

    monkeypatch.setattr(eval_run, "evaluate_model", flaky_eval)
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 1 and r.output.count("RuntimeError: ORT: CUDNN failure 4") == 2, r.output
    assert "Traceback" not in r.output


def test_bare_convkit_prints_the_help():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 0 and r.output.startswith("Usage:") and "error" not in r.output
    assert "train-all" in r.output and "report" in r.output


def test_two_seed_train_all_in_pieces_summarised_as_mean_sd(tmp_path):
    """Seed 0 and seed 1 trained by two separate train-all calls (as on two machines) make one summary row of
    mean ± sd (min–max), computed here from each run's metrics.json with the statistics module."""
    base = ["train-all", "--only", "t1-fcn", "--sample", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path),
            "--quiet", "--no-export"]
    for seed in ("0", "1"):
        r = run(*base, "--seeds", seed)
        assert r.exit_code == 0, r.output
    suite = tmp_path / "seed-sample"
    accs = [json.loads((suite / f"t1-fcn-seed{s}" / "metrics.json").read_text())["test_acc"] for s in (0, 1)]
    configs = [json.loads((suite / f"t1-fcn-seed{s}" / "metrics.json").read_text())["config"]["seed"] for s in (0, 1)]
    assert configs == [0, 1]
    summary = (suite / "summary.md").read_text()
    expected = (f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f} "
                f"({min(accs):.4f}–{max(accs):.4f}, 2 seeds)")
    assert expected in summary and "t1-fcn × 2 seeds (0, 1)" in summary, summary
    pooled = json.loads((suite / "summary.json").read_text())["seeds"]["t1-fcn"]
    assert pooled["runs"] == ["t1-fcn-seed0", "t1-fcn-seed1"]
    assert pooled["test_acc"]["sd"] == pytest.approx(statistics.stdev(accs))
    r = run("train-all", "--only", "t1-fcn", "--seeds", "0,x", "--device", "cpu", "--out", str(tmp_path))
    assert r.exit_code == 2 and "--seeds" in r.output

"""scripts/gpu_check.sh: its dry run (the GPU check's whole path, on the CPU) and the report logic."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)


@pytest.mark.slow
def test_dry_run_writes_the_report(tmp_path):
    # --no-install: the test must not install convkit into the environment running it
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--no-install",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable})  # this venv's python
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["result"] == "OK" and report["train_all_exit"] == 0
    assert [r["experiment"] for r in report["experiments"]] == list(gc.DRY_RUN_EXPERIMENTS)
    for row in report["experiments"]:
        assert row["status"] == "ok" and row["device"] == "cpu" and row["epochs"] == 1
        assert 0 <= row["test_acc"] <= 1 and row["study_test_acc"] > 0.5
        assert row["acc_delta_points"] == pytest.approx(100 * (row["test_acc"] - row["study_test_acc"]), abs=0.01)
        assert row["train_time_s"] > 0 and row["samples_per_s"] > 0 and row["ort_cpu_b1_ms"] > 0
        assert row["export_gate"] == "passed"
    assert report["suite_wall_s"] > 0 and report["machine"]["torch"] and report["machine"]["ort_providers"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| t1-fcn | mnist | cpu | 1 |" in md and "result: **OK**" in md and "suite wall time" in md
    assert "in all, exit 0" in proc.stdout


CLONE_SKIPS = shutil.ignore_patterns(".git", "devdata", "gpu_check", "__pycache__", "*.egg-info", "build", "dist",
                                     ".pytest_cache", "runs")


def _fresh_virtualenv(root: Path) -> Path:
    """Return the python of a new virtualenv under ``root`` that sees the pinned stack (docker/requirements.lock,
    which this test's environment was installed from) through a .pth file, and no convkit: as a GPU machine's
    venv made from the lock, without reinstalling torch from the network. CONVKIT_LOCK_WHEELS (a folder of the
    lock's wheels, `pip download -r docker/requirements.lock`) makes it a real install from the lock instead."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300)
    python = root / "bin" / "python"
    wheels = os.environ.get("CONVKIT_LOCK_WHEELS")
    if wheels:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheels,
                        "--require-hashes", "--no-deps", "-r", str(REPO / "docker" / "requirements.lock")],
                       check=True, capture_output=True, timeout=1200)
        return python
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    stack = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site) / "zz_pinned_stack.pth").write_text("\n".join(stack) + "\n")  # appended after the venv's own
    return python


@pytest.mark.slow
def test_dry_run_on_a_fresh_clone_with_a_fresh_virtualenv_installs_convkit(tmp_path):
    """The GPU machine's path: a fresh clone, a fresh virtualenv, scripts/gpu_check.sh installing convkit (not
    editable) and running it — where the checkout's convkit/ folder (no train/ in it) must not shadow the
    installed package (before the fix: ModuleNotFoundError: No module named 'convkit.train')."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=CLONE_SKIPS)
    python = _fresh_virtualenv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(["bash", str(clone / "scripts" / "gpu_check.sh"), "--dry-run", "--only", "t1-fcn",
                           "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                          env={**env, "OMP_NUM_THREADS": "1", "PYTHON": str(python)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["result"] == "OK" and report["train_all_exit"] == 0, report
    assert report["install"] == "pip install --no-deps --no-build-isolation ."
    assert [r["status"] for r in report["experiments"]] == ["ok"]
    where = subprocess.run([str(python), "-c", "import convkit.train, os; print(os.path.dirname(convkit.__file__))"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0 and "site-packages" in where.stdout  # installed, not the clone's folder


def test_the_train_all_subprocess_never_imports_the_checkout(tmp_path):
    """The dry run's logic on the CPU: the checkout is taken off PYTHONPATH (other entries kept) and train-all runs
    outside the checkout, where `python -m convkit.cli` would import ./convkit first."""
    other = str(tmp_path / "lib")
    env = gc.installed_env({"PYTHONPATH": os.pathsep.join([str(REPO), other, str(REPO) + "/"]), "HOME": "/h"})
    assert env == {"PYTHONPATH": other, "HOME": "/h"}
    assert "PYTHONPATH" not in gc.installed_env({"PYTHONPATH": str(REPO)})
    log = tmp_path / "probe.log"
    rc, _ = gc.run_bounded([sys.executable, "-c", "import os; print(os.getcwd())"], log, 60, dict(os.environ))
    assert rc == 0 and log.read_text().strip() == str(tmp_path)


def test_row_of_an_unfinished_run_and_the_problems(tmp_path):
    row = gc.experiment_row("t3-k3", tmp_path / "absent")
    assert row["status"] == "not finished" and row["study_test_acc"] == 0.9035
    report = {"dry_run": False, "train_all_exit": None, "budget_s": 400, "log": "x.log",
              "experiments": [row, {"experiment": "t1-fcn", "status": "ok", "device": "cpu"}]}
    problems = gc.problems_of(report)
    assert problems == ["train-all stopped at the 400 s budget", "t3-k3: not finished", "t1-fcn ran on cpu, not CUDA"]
    finished_on_cpu = {**report, "dry_run": True, "train_all_exit": 0, "experiments": [report["experiments"][1]]}
    assert gc.problems_of(finished_on_cpu) == []


def test_missing_data_tells_how_to_fill_devdata(tmp_path, capsys):
    assert gc.main(["--data", str(tmp_path / "devdata"), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cp -r <data>/MNIST <data>/cifar10-jpeg.tar.gz" in err and str(tmp_path / "devdata") in err
    assert not (tmp_path / "out").exists()


def test_version_floor():
    assert gc.version_tuple("2.11.0+cu130") == (2, 11, 0) >= gc.MIN_TORCH
    assert gc.version_tuple("2.10.1") < gc.MIN_TORCH


def test_train_all_past_its_budget_is_stopped_and_reported(tmp_path):
    assert gc.main(["--dry-run", "--only", "t1-fcn", "--budget-s", "0.5", "--out-dir", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["train_all_exit"] is None and report["suite_wall_s"] < 30
    assert report["problems"][:2] == ["train-all stopped at the 0.5 s budget", "t1-fcn: not finished"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "result: **FAILED**" in md and "| t1-fcn | mnist | – |" in md and "Last lines of" in md

"""Exits and leftovers of issue 27 (round four): a full disk while taking a lock, a closed pipe, Ctrl-C."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convkit import artifacts
from convkit.errors import ConvkitError

REPO = Path(__file__).resolve().parent.parent


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fd: int):
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_lock_on_a_full_disk_is_one_line_and_leaves_no_empty_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.os, "fdopen", lambda fd, mode: _FullDisk(fd))
    folder = tmp_path / "run"
    with pytest.raises(ConvkitError) as err:
        with artifacts.run_lock(folder, "convkit test"):
            pass
    assert "No space left on device" in err.value.message and err.value.exit_code == 2
    assert not artifacts.lock_path(folder).exists()


@pytest.mark.slow
def test_a_closed_pipe_is_not_a_bug():
    """`convkit list | head -1`: the reader leaves early; convkit exits 141 (128 + SIGPIPE) saying nothing."""
    proc = subprocess.run(f"{sys.executable} -m convkit.cli list | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 141, proc.stderr
    assert proc.stdout.startswith("suite") and proc.stderr == ""


def test_ctrl_c_during_training_says_which_epoch_the_checkpoint_holds(tmp_path, monkeypatch):
    """Checkpoints are written after the first epoch, then at most every 5 min: Ctrl-C in epoch 3 leaves epoch 1,
    and says so; history.csv is cut back to agree with the checkpoint (before: "the last completed epoch is
    saved" while checkpoint.pt held epoch 1 and history.csv listed 2)."""
    import csv

    import torch

    from convkit.train import TrainOverrides, resolve_config, train_experiment
    from convkit.train import run as train_run

    calls = {"n": 0}
    real = train_run.train_epoch

    def stop_in_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_run, "train_epoch", stop_in_third)
    cfg = resolve_config("t1-fcn", TrainOverrides(epochs=5, device="cpu", sample=True, out=tmp_path, compile=False))
    with pytest.raises(KeyboardInterrupt) as err:
        train_experiment(cfg, quiet=True)
    run = Path(cfg.run_dir)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    with open(run / "history.csv", newline="") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert saved == 1 and epochs == [1]
    message = err.value.message
    assert "holds epoch 1 of 5" in message and "epochs 2–2 finished since are not saved" in message
    assert "--resume to continue from epoch 2" in message


def test_report_removes_the_temporary_figures_a_killed_build_left(sample_runs, tmp_path):
    import shutil
    import time

    from click.testing import CliRunner

    from convkit.cli import main

    suite = tmp_path / "seed-sample"
    shutil.copytree(sample_runs["t1-fcn"], suite / "t1-fcn")
    (suite / "report").mkdir()
    old = suite / "report" / ".t1-fcn-curves.png.k9x2.tmp"  # what kill -9 during a figure's write leaves
    old.write_bytes(b"half a png")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    live = suite / "report" / ".t1-fcn-grads.png.a1b2.tmp"  # a build running now, beside this one
    live.write_bytes(b"being written")
    r = CliRunner().invoke(main, ["report", str(suite)])
    assert r.exit_code == 0, r.output
    assert not old.exists() and live.exists()


def test_a_full_disk_during_evaluate_leaves_no_lone_confusion_csv(tmp_path, monkeypatch):
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from convkit.cli import main
    from convkit.evaluate import run as evaluate_run
    from test_bad_inputs import tiny_classifier

    model = tiny_classifier(tmp_path / "m.onnx", 3)
    for i, c in enumerate("abc"):
        (tmp_path / "pics" / c).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp_path / "pics" / c / "0.png")

    def full_disk(path, kind, doc):
        raise ConvkitError(f"cannot write {path}: No space left on device; free space on that disk")

    monkeypatch.setattr(evaluate_run, "write_artifact", full_disk)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(tmp_path / "pics"), "--no-latency",
                                  "--accept-defaults", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "No space left on device" in r.output
    assert sorted(p.name for p in out.iterdir()) == []  # no confusion.csv, confusion.png or eval.md alone


def test_a_decoded_cache_file_with_foreign_keys_is_rebuilt(tmp_path, monkeypatch):
    import torch

    from convkit.data.load import load_dataset
    from convkit.data.sources import locate, sample_dir

    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cache"))
    src = locate("mnist", sample_dir())
    cache = tmp_path / "cache" / "tensors" / f"mnist-{src.checksum[:16]}.pt"
    cache.parent.mkdir(parents=True)
    torch.save({"images": torch.zeros(3), "whatever": torch.ones(2)}, cache)  # before: KeyError, exit 70
    ds = load_dataset("mnist", sample=True)
    assert ds.test_images.shape[1:] == (1, 28, 28) and len(ds.test_images) == len(ds.test_labels) > 0
    # rebuilt as a verified entry (convkit.data.cache: key + content sha256 beside the tensors)
    assert set(torch.load(cache, weights_only=True)["tensors"]) == {"train_images", "train_labels", "test_images",
                                                                    "test_labels"}


def test_ctrl_c_after_the_command_finished_says_so_and_keeps_its_exit_status(tmp_path):
    """SIGINT while the interpreter shuts down (after the command's last line): before, it exited 130 with no
    word (or a traceback from an exit handler); now it says the command had finished and exits with its status."""
    script = ("import atexit, os, signal, sys, time\n"
              "from convkit.cli import main\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))\n"
              "sys.argv = ['convkit', '--version']\n"
              "main()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("convkit, version")
    assert proc.stderr.strip() == "interrupted after the command had finished (exit 0): what it printed and wrote " \
                                  "is complete"

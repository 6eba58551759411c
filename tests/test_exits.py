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

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


def test_a_closed_pipe_is_not_a_bug():
    """`convkit list | head -1`: the reader leaves early; convkit exits 141 (128 + SIGPIPE) saying nothing."""
    proc = subprocess.run(f"{sys.executable} -m convkit.cli list | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 141, proc.stderr
    assert proc.stdout.startswith("suite") and proc.stderr == ""

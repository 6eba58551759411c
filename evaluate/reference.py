"""The PyTorch reference for an exported model: its run directory's checkpoint, rebuilt as an eager module."""

from __future__ import annotations

from convkit.artifacts import RunModel, load_run_model, run_dir_of

Reference = RunModel
find_run_dir = run_dir_of
load_reference = load_run_model

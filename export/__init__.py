"""Export stage: trained runs → ``model.onnx`` (+ fp16/int8 variants) and ``export.json``, behind a parity gate.

Modules: ``onnx_export`` (torch.onnx.export and its errors), ``parity`` (PyTorch vs ONNX Runtime on real test
images, the gates), ``quantize`` (fp16 and int8 variants), ``pipeline`` (one checkpoint end to end, in small
steps; ``export_run``, ``export_all``), ``user_export`` / ``user_cli`` (a user's own PyTorch model: the same
gate and variants into a run-like folder), ``cli`` (the ``convkit export`` command). The stage reads a run folder
through ``convkit.artifacts`` and writes ONNX metadata through ``convkit.onnx_meta``; it imports no other stage.
"""

import importlib

# Loaded on first use, so that importing the package (as `convkit --help` does for its cli module) stays cheap.
_EXPORTS = {name: "pipeline" for name in ("ExportSettings", "export_all", "export_checkpoint", "export_run",
                                          "SUMMARY_COLUMNS")}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

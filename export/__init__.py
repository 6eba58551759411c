"""Export stage: trained runs → ``model.onnx`` (+ fp16/int8 variants) and ``export.json``, behind a parity gate.

One module per job; the module map is docs/layout.md. The stage reads a run folder through ``convkit.artifacts``
and writes ONNX metadata through ``convkit.onnx_meta``; it imports no other stage.
"""

import importlib

# Loaded on first use, so that importing the package (as `convkit --help` does for its cli module) stays cheap.
_EXPORTS = {name: "pipeline" for name in ("ExportSettings", "export_all", "export_checkpoint", "export_run")}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

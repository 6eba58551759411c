"""Evaluation stage: re-measure exported ONNX classifiers under ONNX Runtime (accuracy, confusion, latency).

One module per job; the module map is docs/layout.md. The stage reads a run folder through ``convkit.artifacts``
and ONNX metadata through ``convkit.onnx_meta``; it imports no other stage.
"""

import importlib

# Loaded on first use, so that importing the package (as `convkit --help` does for its cli module) stays cheap.
_EXPORTS = {"EvalOptions": "options", "quick_options": "options", "evaluate_model": "run", "gate_error": "run"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

"""Evaluation stage: re-measure exported ONNX classifiers under ONNX Runtime (accuracy, confusion, latency).

Modules, one job each:

* ``options`` — every knob of an evaluation (data / providers / timing / gates), ``quick_options`` for train-all.
* ``target`` — what to evaluate (a run's variants, one variant, a foreign file) and where outputs go.
* ``images`` — which test images: a catalog dataset's test split, or any labelled folder / CSV (``--data``).
* ``model_io`` — read an ONNX file's interface and metadata, resolve dataset/normalization, adapt inputs.
* ``accuracy`` — run a test split through ORT, classification metrics and the accuracy gate (convkit.gates); the
  PyTorch reference and the ORT sessions come from the shared core (convkit.reference, convkit.providers).
* ``preprocessing_probe`` — is the preprocessing right? Warnings on defaulted values, and a probe of the usual
  conventions when predictions collapse.
* ``latency`` — timing loops and one runner per backend (ORT CPU, ORT CUDA, PyTorch), ratios attached in one pass.
* ``serving/`` — MLPerf LoadGen scenarios (``--scenario``) against a queue-fed ONNX Runtime server, and the
  deployment recommendation (``backend``, ``sut``, ``scenarios``, ``section``, ``cli``, ``recommend``).
* ``result`` — ``EvalResult``: eval.json as one typed object, assembled once, written by ``to_json()``.
* ``robustness`` — ``--corruptions``: corrupted copies of the test split (convkit.data.corruptions) through every
  session and the PyTorch reference; top-1, ECE and the change vs clean per corruption and severity.
* ``markdown`` — eval.md, the latency plot and the confusion-matrix PNG/CSV.
* ``run`` — ``evaluate_model(...)`` ties the above together, writes the outputs and returns the EvalResult.
* ``cli`` — the ``convkit evaluate`` click command.

The stage reads a run folder through ``convkit.artifacts`` and ONNX metadata through ``convkit.onnx_meta``; it
imports no other stage.
"""

import importlib

# Loaded on first use, so that importing the package (as `convkit --help` does for its cli module) stays cheap.
_EXPORTS = {"EvalOptions": "options", "quick_options": "options", "evaluate_model": "run", "gate_error": "run"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)

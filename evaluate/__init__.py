"""Evaluation stage: re-measure exported ONNX classifiers under ONNX Runtime (accuracy, confusion, latency).

Modules, one job each:

* ``providers`` — which ONNX Runtime execution providers really work here; session construction.
* ``model_io`` — read an ONNX file's interface and metadata, resolve dataset/normalization, adapt inputs.
* ``accuracy`` — run a test split through ORT or PyTorch and compute classification metrics.
* ``reference`` — load the PyTorch model of a run directory.
* ``latency`` — timing loops (ORT CPU, ORT CUDA with IO binding and CUDA graphs, PyTorch eager/compile).
* ``report`` — eval.md, the latency plot and the confusion-matrix PNG/CSV.
* ``run`` — ``evaluate_model(...)`` ties the above together and writes the outputs.
* ``stage`` — ``evaluate_stage(quick)`` for ``train-all``.
* ``cli`` — the ``convkit evaluate`` click command.

Importing this package is cheap; heavy imports (torch, onnxruntime, matplotlib) happen inside functions.
"""

__all__ = ["evaluate_model", "evaluate_stage"]


def __getattr__(name):
    if name == "evaluate_model":
        from convkit.evaluate.run import evaluate_model

        return evaluate_model
    if name == "evaluate_stage":
        from convkit.evaluate.stage import evaluate_stage

        return evaluate_stage
    raise AttributeError(name)

"""``train-all`` integration: evaluate each freshly exported run and return its summary-table fields."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from convkit.train.summary import EXTRA_COLUMNS

# The fields train-all's summary.md shows for this stage.
SUMMARY_KEYS = tuple(key for _, key, _ in EXTRA_COLUMNS)


def stage_options(quick: bool = True, precisions: tuple[str, ...] = ("fp32",)):
    """Return the EvalOptions the stage uses.

    quick: the given precisions (fp32 plus train-all's --precision variants); batch 1 and the largest
    default batch (256 on CPU, 1024 on GPU); 1 warm-up and 5
    timed calls, no minimum duration; no CUDA graphs, no PyTorch latency (PyTorch accuracy is still
    computed for the delta). Otherwise the full CLI defaults.
    """
    from convkit.evaluate.run import CPU_BATCHES, GPU_BATCHES, EvalOptions

    if quick:
        return EvalOptions(precisions=tuple(precisions), warmup=1, runs=5, min_seconds=0.0,
                           cpu_batches=(1, CPU_BATCHES[-1]), gpu_batches=(1, GPU_BATCHES[-1]),
                           cuda_graph=False, torch_compile=False, pytorch_latency=False)
    return EvalOptions()


def evaluate_stage(quick: bool = True,
                   precisions: tuple[str, ...] = ("fp32",)) -> Callable[[object, Path, dict], dict]:
    """Return a post-training stage ``(experiment, run_dir, metrics) -> dict`` of summary fields.

    The returned dict holds ``ort_test_acc``, ``ort_acc_delta`` (ORT − PyTorch accuracy), ``ort_cpu_b1_p50_ms``,
    ``ort_cuda_b1_p50_ms`` (when CUDA works), ``ort_max_batch_ips`` and ``eval_json`` (path of the report).
    The stage raises ConvkitError exit 1 when the accuracy gate fails and exit 2 when the run has no
    model.onnx (the export stage must run before it).
    """
    from convkit.evaluate.run import evaluate_model, gate_error

    def stage(exp, run_dir: Path, metrics: dict) -> dict:
        result = evaluate_model(run_dir, stage_options(quick, precisions))
        err = gate_error(result)
        if err is not None:
            raise err
        out = {k: result["summary"][k] for k in SUMMARY_KEYS if k in result["summary"]}
        out["eval_json"] = result["files"].get("eval_json")
        return out

    return stage

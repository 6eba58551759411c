"""LoadGen SingleStream: convkit's SUT against a minimal synchronous harness (not a test).

Both run in this process, on the same ONNX file, the same ORT session settings (convkit.providers, 1 intra-op
thread) and the same LoadGen settings (convkit's quick SingleStream: scenarios.make_settings), alternating
A, B, A, B… so both see the same machine load. The minimal harness is MLPerf's reference shape
(vision/classification_and_detection/python/main.py: SingleStream → RunnerBase, the model run inside
issue_queries, then QuerySamplesComplete) written in a dozen lines here. Goal: convkit's p90 ≤ 1.2× the
minimal harness's (median over the repeats).

    python bench/singlestream_overhead.py --repeats 5                 # a small MLP on 1×28×28 (random weights)
    python bench/singlestream_overhead.py --onnx model.onnx --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def small_model(path: Path) -> Path:
    """Write a small MLP (784 → 100 → 10, seeded random weights) exported as convkit exports; returns ``path``."""
    import onnx
    import torch

    from convkit.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(),
                                torch.nn.Linear(100, 10)).eval()
    onnx.save(export_onnx(model, (1, 28, 28)), str(path))
    return path


def minimal_harness(lg, session, x: np.ndarray, settings, log_dir: Path) -> dict:
    """Run LoadGen with the reference's synchronous SUT: each query's inference inside issue_queries."""
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def issue_queries(queries):
        for q in queries:
            y = np.ascontiguousarray(session.run([name_out], {name_in: x[q.index:q.index + 1]})[0][0])
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, y.ctypes.data, y.nbytes)])

    return _run(lg, issue_queries, len(x), settings, log_dir)


def _run(lg, issue, n: int, settings, log_dir: Path) -> dict:
    from convkit.evaluate.serving import scenarios as sc

    log_dir.mkdir(parents=True, exist_ok=True)
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(n, min(n, sc.PERF_SAMPLE_COUNT), lambda idx: None, lambda idx: None)
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    lg.StartTestWithLogSettings(sut, qsl, settings, log)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    detail = sc.parse_detail((log_dir / "mlperf_log_detail.txt").read_text())
    return sc.results_row("single-stream", detail, {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=None, help="model to serve (default: a small MLP)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="LoadGen min duration per run")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    from convkit.evaluate.model_io import Overrides, inspect_model
    from convkit.evaluate.serving import scenarios as sc
    from convkit.evaluate.serving.section import ort_backends
    from convkit.evaluate.serving.sut import SutConfig
    from convkit.providers import ProviderConfig, make_session

    lg = sc.require_loadgen()
    sc.QUICK_MIN_DURATION_MS = int(args.seconds * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = args.onnx or small_model(tmp / "mlp.onnx")
        spec = inspect_model(path, Overrides(dataset="mnist") if args.onnx is None else None)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(256, *spec.image_shape), dtype=np.uint8)
        x = spec.prepare(images)
        sut = SutConfig(intra_op_threads=1)
        opts = sc.ScenarioOptions(scenarios=("single-stream",), quick=True, accuracy=False, sut=sut)
        served = sc.Served(ort_backends(spec, "cpu", sut), x)
        session = make_session(str(path), ProviderConfig("cpu", threads=1))
        for _ in range(20):
            session.run(None, {spec.input_name: x[:1]})
        estimate = sc.estimate_speed(served, sut)
        rows = {"convkit": [], "minimal": []}
        for i in range(args.repeats):
            settings, _ = sc.make_settings(lg, "single-stream", "performance", opts, estimate)
            for who in ("convkit", "minimal") if i % 2 == 0 else ("minimal", "convkit"):  # alternate the order
                rows[who].append(sc.run_one(lg, "single-stream", served, opts, estimate, tmp / f"c{i}")
                                 if who == "convkit" else minimal_harness(lg, session, x, settings, tmp / f"m{i}"))
            print(f"repeat {i + 1}: p90 convkit {rows['convkit'][-1]['p90_ms']:.4f} ms, minimal "
                  f"{rows['minimal'][-1]['p90_ms']:.4f} ms", flush=True)
    p90 = {k: [r["p90_ms"] for r in v] for k, v in rows.items()}
    ratios = [c / m for c, m in zip(p90["convkit"], p90["minimal"])]
    result = {"model": str(args.onnx or "small MLP 784-100-10"), "repeats": args.repeats,
              "p90_ms": p90, "p50_ms": {k: [r["p50_ms"] for r in v] for k, v in rows.items()},
              "ratio_p90_per_repeat": ratios, "ratio_of_median_p90": float(np.median(p90["convkit"]) /
                                                                      np.median(p90["minimal"])),
              "goal": "convkit p90 <= 1.2x the minimal harness's"}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU inference benchmark (not a test): PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 (static QDQ,
per-channel), for each seed model at batch 1 and 256, measured interleaved in one process so the ratios are
taken under the same machine load.

    python bench/inference.py --only 't1-*' --only t5-custom-conv --runs 60 --out bench-inference.json
    python bench/inference.py --runs-root runs/seed        # trained weights where a run exists
    python bench/inference.py --include-slow               # also ResNet-50 (t6-bottleneck), slow on few cores

Weights: a run's checkpoint when ``--runs-root/<experiment>/checkpoint.pt`` exists, else random (seeded).
Accuracy is measured on the embedded sample's 500 test images (meaningful for trained weights only); the int8
"agreement" column is the fraction of test images whose top-1 class equals the fp32 model's.

Targets: ORT fp32 batch-1 p50 ≤ 0.3× PyTorch eager; ORT int8 ≤ 0.6× ORT fp32 with ≤ 0.5 points of accuracy lost.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SLOW = {"t6-bottleneck"}  # ResNet-50: minutes per model on 2 cores


def _export(model, input_shape, path: Path) -> None:
    """Export ``model`` to ``path`` exactly as `convkit export` does; returns None."""
    import onnx

    from convkit.export.onnx_export import export_onnx

    onnx.save(export_onnx(model, tuple(input_shape)), str(path))


def _int8(src: Path, dst: Path, calib: np.ndarray) -> dict:
    """Quantize ``src`` to ``dst`` exactly as `convkit export --precision int8` does; returns its settings."""
    import onnx

    from convkit.export.quantize import to_int8

    proto, settings = to_int8(onnx.load(str(src)), calib)
    onnx.save(proto, str(dst))
    return settings


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # No busy-waiting: spinning ORT workers would steal the cores from the PyTorch calls timed between them.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _interleaved(fns: dict, warmup: int, runs: int, min_seconds: float, rounds: int = 5) -> dict:
    """Time each callable in ``fns`` in ``rounds`` alternating rounds; returns {name: stats in ms}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    per_round = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.05)  # let the previous backend's worker threads go idle
            fn()  # one untimed call to wake this backend's threads
            t_end = time.perf_counter() + min_seconds / rounds
            n = 0
            while n < per_round or time.perf_counter() < t_end:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
                n += 1
    out = {}
    for k, ts in times.items():
        ms = np.asarray(ts) * 1e3
        out[k] = {"p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                  "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "n": int(len(ms))}
    return out


def bench_one(exp, args, data: dict, tmp: Path) -> dict:
    """Benchmark one experiment; returns its result dict (accuracy and latency rows)."""
    import torch

    from convkit.data.loader import normalize
    from convkit.models import create_model

    from convkit.artifacts import is_run_dir, load_run_model

    torch.manual_seed(0)
    run_dir = Path(args.runs_root) / exp.name if args.runs_root else None
    if run_dir is not None and is_run_dir(run_dir):
        run = load_run_model(run_dir)
        model, weights = run.model, str(run.checkpoint)
    else:
        model, weights = create_model(exp.model).eval(), "random"
    cfg = model.default_cfg
    d = data[cfg.dataset]
    def norm(u8: np.ndarray) -> np.ndarray:
        return normalize(torch.from_numpy(u8), cfg.mean, cfg.std).numpy()

    test_x, test_y = norm(d["test_x"]), d["test_y"]
    fp32, int8 = tmp / f"{exp.name}.onnx", tmp / f"{exp.name}.int8.onnx"
    t0 = time.perf_counter()
    _export(model, cfg.input_shape, fp32)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    quant_impl = _int8(fp32, int8, norm(d["calib_x"]))
    quant_s = time.perf_counter() - t0
    s32, s8 = _session(fp32, args.threads), _session(int8, args.threads)

    with torch.inference_mode():
        pt_pred = np.concatenate([model(torch.from_numpy(test_x[i:i + 256])).argmax(1).numpy()
                                  for i in range(0, len(test_x), 256)])
    p32 = np.concatenate([s32.run(None, {"input": test_x[i:i + 256]})[0].argmax(1) for i in range(0, len(test_x), 256)])
    p8 = np.concatenate([s8.run(None, {"input": test_x[i:i + 256]})[0].argmax(1) for i in range(0, len(test_x), 256)])
    res = {"experiment": exp.name, "model": exp.model, "params": sum(p.numel() for p in model.parameters()),
           "weights": weights, "export_s": export_s, "quantize_s": quant_s, "quantizer": quant_impl,
           "acc_torch": float((pt_pred == test_y).mean()), "acc_ort_fp32": float((p32 == test_y).mean()),
           "acc_ort_int8": float((p8 == test_y).mean()), "int8_agreement": float((p8 == p32).mean()),
           "fp32_agreement": float((p32 == pt_pred).mean()), "latency": []}
    for b in args.batch_sizes:
        reps = -(-b // len(test_x))
        xb = np.ascontiguousarray(np.concatenate([test_x] * reps)[:b]) if reps > 1 else np.ascontiguousarray(test_x[:b])
        xt = torch.from_numpy(xb)

        def torch_fn():
            with torch.inference_mode():
                model(xt)

        stats = _interleaved({"torch_eager": torch_fn,
                              "ort_fp32": lambda: s32.run(["logits"], {"input": xb}),
                              "ort_int8": lambda: s8.run(["logits"], {"input": xb})},
                             args.warmup, args.runs, args.min_seconds)
        row = {"batch": b, **{f"{k}_{m}": v[m] for k, v in stats.items() for m in ("p50_ms", "p90_ms", "n")}}
        row["fp32_vs_torch"] = row["ort_fp32_p50_ms"] / row["torch_eager_p50_ms"]
        row["int8_vs_fp32"] = row["ort_int8_p50_ms"] / row["ort_fp32_p50_ms"]
        row["ort_fp32_images_per_s"] = b / (row["ort_fp32_p50_ms"] / 1e3)
        res["latency"].append(row)
    return res


def table(results: list[dict]) -> str:
    """Return the markdown table of ``results``."""
    lines = ["| experiment | params | batch | PyTorch eager p50 ms | ORT fp32 p50 ms | fp32÷PT | ORT int8 p50 ms | "
             "int8÷fp32 | acc PT / fp32 / int8 | int8 top-1 agreement |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["latency"]:
            lines.append(f"| {r['experiment']} | {r['params']:,} | {row['batch']} | {row['torch_eager_p50_ms']:.3f} | "
                         f"{row['ort_fp32_p50_ms']:.3f} | {row['fp32_vs_torch']:.2f} | {row['ort_int8_p50_ms']:.3f} | "
                         f"{row['int8_vs_fp32']:.2f} | {r['acc_torch']:.3f} / {r['acc_ort_fp32']:.3f} / "
                         f"{r['acc_ort_int8']:.3f} | {r['int8_agreement']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the benchmark; returns the process exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="glob over seed experiment names; repeatable")
    p.add_argument("--include-slow", action="store_true", help="include ResNet-50 (t6-bottleneck)")
    p.add_argument("--runs-root", default=None, help="folder of run dirs (<root>/<experiment>/checkpoint.pt)")
    p.add_argument("--batch-sizes", default="1,256")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=100, help="minimum timed calls per backend and batch")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds per backend and batch")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for ORT and PyTorch (default: physical cores)")
    p.add_argument("--calib", type=int, default=256, help="calibration images for int8")
    p.add_argument("--out", default="bench-inference.json")
    args = p.parse_args(argv)
    args.batch_sizes = [int(v) for v in args.batch_sizes.split(",")]

    import torch

    from convkit.data.load import load_dataset
    from convkit.envinfo import environment, physical_cores
    from convkit.suite import select_experiments

    args.threads = args.threads or physical_cores()
    torch.set_num_threads(args.threads)
    exps = [e for e in select_experiments("seed")
            if (not args.only or any(fnmatch.fnmatch(e.name, g) for g in args.only))
            and (args.include_slow or e.name not in SLOW or (args.only and e.name in args.only))]
    data = {}
    for name in {e.dataset for e in exps}:
        ds = load_dataset(name, sample=True)
        data[name] = {"test_x": ds.test_images.numpy(), "test_y": ds.test_labels.numpy(),
                      "calib_x": ds.train_images[:args.calib].numpy()}
    results = []
    with tempfile.TemporaryDirectory(prefix="convkit-bench-") as tmp:
        for exp in exps:
            print(f"[{len(results) + 1}/{len(exps)}] {exp.name} ...", file=sys.stderr, flush=True)
            results.append(bench_one(exp, args, data, Path(tmp)))
    doc = {"method": {"clock": "time.perf_counter per call", "warmup": args.warmup, "runs": args.runs,
                      "min_seconds": args.min_seconds, "interleaving": "5 alternating rounds per batch size",
                      "threads": args.threads, "graph_optimization": "ORT_ENABLE_ALL", "ort_spinning": "off",
                      "int8": "static QDQ, per-channel int8 weights, int8 activations, MinMax calibration on "
                              f"{args.calib} sample training images",
                      "accuracy": "embedded sample test split (500 images)"},
           "environment": environment("cpu"), "results": results}
    from convkit.atomic import write_json

    write_json(Path(args.out), doc)
    print(table(results))
    print(f"\nwritten: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

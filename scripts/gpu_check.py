"""The prepared GPU check: train a few experiments with ``convkit train-all`` on the default device (CUDA on a GPU
machine), then write ``gpu_check.json`` and ``gpu_check.md``: per experiment the test accuracy against the study's,
train, compile and throughput figures and ONNX Runtime batch-1 latency; the suite's wall time; the machine,
driver and versions.

Run it through ``scripts/gpu_check.sh`` (which installs convkit from the checkout, offline). Supported: Python
≥ 3.11, torch ≥ 2.11 (CUDA 13 builds need NVIDIA driver ≥ 580), onnxruntime or onnxruntime-gpu ≥ 1.30.
``--dry-run`` runs the same path on the CPU, on the embedded sample, one epoch of two small experiments.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# convkit is imported as installed (scripts/gpu_check.sh installs it): the checkout's convkit/ folder lacks the
# train/, export/ and evaluate/ subpackages that setup.cfg maps in, so it is never put on sys.path.

from convkit.artifacts import EXPORT_JSON, HISTORY, METRICS, EvalNames, read_artifact  # noqa: E402
from convkit.atomic import write_json, write_text  # noqa: E402
from convkit.suite import get_experiment  # noqa: E402

MIN_TORCH = (2, 11)
# Three rows that fit 8 minutes on one GPU from a cold compile cache (about 1.5 min each: compile, 15 epochs,
# export, evaluation): an MNIST CNN, a CIFAR-10 residual CNN with BatchNorm, the study's best CIFAR-10 row.
GPU_EXPERIMENTS = ("t1-simple-cnn", "t2-residual-cnn", "t3-k3")
DRY_RUN_EXPERIMENTS = ("t1-fcn", "t5-custom-conv")
DATA_HELP = ("the GPU check reads the datasets from {data}: fill it with\n"
             "  mkdir -p {data} && cp -r <data>/MNIST <data>/cifar10-jpeg.tar.gz {data}/\n"
             "(<data>: the folder holding MNIST/raw and cifar10-jpeg.tar.gz)")


def version_tuple(text: str) -> tuple[int, ...]:
    """Return the leading numeric release of a version string: "2.11.0+cu130" → (2, 11, 0)."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def nvidia_driver() -> dict | None:
    """Return {"driver", "gpus"} from nvidia-smi, None when it is absent or fails."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        return None
    return {"driver": rows[0][1], "gpus": [{"name": r[0], "memory": r[2] if len(r) > 2 else None} for r in rows]}


def machine_info() -> dict:
    """Return versions (python, torch, CUDA, onnxruntime and its providers, ...), the devices and the driver."""
    import onnxruntime as ort
    import torch

    from convkit.envinfo import environment

    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = environment(device)
    info.update(torch_cuda_available=torch.cuda.is_available(), onnxruntime=ort.__version__,  # the one imported
                ort_providers=ort.get_available_providers(),
                onnxscript=importlib.util.find_spec("onnxscript") is not None, nvidia=nvidia_driver(),
                torch_compile_threads=os.environ.get("TORCHINDUCTOR_COMPILE_THREADS"))
    return info


def train_all_command(args, experiments: list[str], export: bool) -> list[str]:
    """Return the ``convkit train-all`` command line the check runs."""
    cmd = [sys.executable, "-m", "convkit.cli", "train-all", "--suite", "seed", "--out", str(args.runs_dir), "--quiet"]
    for name in experiments:
        cmd += ["--only", name]
    if args.dry_run:
        cmd += ["--sample", "--epochs", "1", "--device", "cpu"]
    else:
        cmd += ["--data-dir", str(args.data)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if not export:
        cmd.append("--no-export")
    return cmd


def installed_env(environ) -> dict:
    """Return ``environ`` for the train-all subprocess with the checkout taken off PYTHONPATH, so it imports the
    installed convkit (with its train/export/evaluate subpackages), not the checkout's convkit/ folder."""
    repo = os.path.realpath(REPO)
    keep = [p for p in (environ.get("PYTHONPATH") or "").split(os.pathsep)
            if p and os.path.realpath(p) != repo]
    env = {k: v for k, v in environ.items() if k != "PYTHONPATH"}
    if keep:
        env["PYTHONPATH"] = os.pathsep.join(keep)
    return env


def run_bounded(cmd: list[str], log: Path, timeout_s: float, env: dict) -> tuple[int | None, float]:
    """Run ``cmd`` with its output in ``log``; returns (exit code or None when killed at ``timeout_s``, wall s)."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        # cwd: the log's folder, outside the checkout, where `python -m` would import ./convkit instead
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the compile workers go too
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def samples_per_s(run_dir: Path) -> float | None:
    """Return the median training throughput over the run's epochs after the first (all when only one)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(fh) if r.get("samples_per_s")]
    rates = sorted(rates[1:] or rates)
    return rates[len(rates) // 2] if rates else None


def experiment_row(name: str, run_dir: Path) -> dict:
    """Return one experiment's figures read from its run folder (metrics, export and eval files)."""
    exp = get_experiment(name)
    study = exp.seed.test_acc if exp.seed else None
    row = {"experiment": name, "model": exp.model, "dataset": exp.dataset, "study_test_acc": study,
           "study_time_s": exp.seed.time_s if exp.seed else None, "run_dir": str(run_dir)}
    metrics = read_artifact(run_dir / METRICS, "metrics")
    if metrics is None:
        return {**row, "status": "not finished"}
    cfg = metrics.get("config", {})
    row.update(status="ok", device=cfg.get("device"), compiled=cfg.get("compile"), amp=cfg.get("amp"),
               channels_last=cfg.get("channels_last"), epochs=metrics["epochs"], test_acc=metrics["test_acc"],
               acc_delta_points=None if study is None else round(100 * (metrics["test_acc"] - study), 2),
               train_time_s=metrics["train_time_s"], compile_time_s=metrics["compile_time_s"],
               samples_per_s=samples_per_s(run_dir))
    export = read_artifact(run_dir / EXPORT_JSON, "export")
    if export is not None:
        row["export_gate"] = export.get("gate")
    evaluation = read_artifact(run_dir / EvalNames("eval").json, "eval")
    if evaluation is not None:
        summary = evaluation.get("summary", {})
        row.update(ort_test_acc=summary.get("ort_test_acc"), ort_cpu_b1_ms=summary.get("ort_cpu_b1_p50_ms"),
                   ort_cuda_b1_ms=summary.get("ort_cuda_b1_p50_ms"))
    elif export is not None:
        row["status"] = "not evaluated"
    return row


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """Return the report as Markdown: a header of machine and versions, one table row per experiment."""
    m = report["machine"]
    nv = m.get("nvidia") or {}
    gpus = ", ".join(g["name"] for g in nv.get("gpus", [])) or "none"
    lines = [
        f"# convkit GPU check{' (dry run: CPU, embedded sample, 1 epoch)' if report['dry_run'] else ''}",
        "",
        f"- result: **{report['result']}**" + (f" — {'; '.join(report['problems'])}" if report["problems"] else ""),
        f"- suite wall time (`convkit train-all`, train + export + evaluate): {report['suite_wall_s']:.1f} s; "
        f"whole check {report['check_wall_s']:.1f} s",
        f"- machine: {gpus}; NVIDIA driver {nv.get('driver', 'none')}; CPU {m['cpu']} "
        f"({m['cpu_physical_cores']} cores)",
        f"- versions: python {m['python']}, torch {m['torch']} (CUDA {m['cuda'] or 'none'}, cuDNN {m['cudnn']}), "
        f"torchvision {m['torchvision']}, onnx {m['onnx']}, onnxruntime {m['onnxruntime']} "
        f"({', '.join(p.replace('ExecutionProvider', '') for p in m['ort_providers'])}), convkit {m['convkit']} "
        f"({(m['git_revision'] or 'no git')[:12]}; installed by {report['install']})",
        "",
        "| experiment | dataset | device | epochs | test acc | study | Δ points | train s | compile s | samples/s "
        "| ORT CPU b1 ms | ORT CUDA b1 ms | status |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["experiments"]:
        lines.append(
            f"| {r['experiment']} | {r['dataset']} | {r.get('device', '–')} | {_fmt(r.get('epochs'), 'd')} "
            f"| {_fmt(r.get('test_acc'), '.4f')} | {_fmt(r['study_test_acc'], '.4f')} "
            f"| {_fmt(r.get('acc_delta_points'), '+.2f')} | {_fmt(r.get('train_time_s'), '.1f')} "
            f"| {_fmt(r.get('compile_time_s'), '.1f')} | {_fmt(r.get('samples_per_s'), ',.0f')} "
            f"| {_fmt(r.get('ort_cpu_b1_ms'), '.3f')} | {_fmt(r.get('ort_cuda_b1_ms'), '.3f')} | {r['status']} |")
    lines += ["", "`train s`: train + per-epoch test wall clock; `compile s`: torch.compile warm-up, apart; "
              "samples/s: median training throughput of the epochs after the first; ORT b1: batch-1 p50 latency "
              "of the fp32 ONNX model (CUDA only where onnxruntime-gpu's CUDA provider works)."]
    lines += [f"- note: {n}" for n in report["notes"]]
    if report["problems"]:
        lines += ["", f"Last lines of `{report['log']}`:", "", "```", *report["log_tail"][-15:], "```"]
    return "\n".join(lines) + "\n"


def problems_of(report: dict) -> list[str]:
    """Return what makes the check fail: a failed train-all, an experiment that did not finish, no CUDA on a GPU run."""
    out = []
    if report["train_all_exit"] is None:
        out.append(f"train-all stopped at the {report['budget_s']:g} s budget")
    elif report["train_all_exit"] != 0:
        out.append(f"train-all exited {report['train_all_exit']} (see {report['log']})")
    out += [f"{r['experiment']}: {r['status']}" for r in report["experiments"] if r["status"] != "ok"]
    if not report["dry_run"]:
        out += [f"{r['experiment']} ran on {r['device']}, not CUDA" for r in report["experiments"]
                if r.get("device") and not r["device"].startswith("cuda")]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Return the parsed command line, with the dry run's defaults filled in."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, embedded sample, 1 epoch, two small experiments")
    ap.add_argument("--only", action="append", help="experiment to run (repeatable); default: a set that fits 8 min")
    ap.add_argument("--epochs", type=int, help="override the epochs (default: the study's)")
    ap.add_argument("--data", type=Path, default=REPO / "devdata", help="datasets folder (default: devdata/)")
    ap.add_argument("--out-dir", type=Path, default=REPO / "gpu_check", help="where gpu_check.json/.md go")
    ap.add_argument("--runs-dir", type=Path, help="run folders (default: OUT_DIR/runs)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="stop train-all after this many seconds")
    ap.add_argument("--install", default="unknown", help=argparse.SUPPRESS)  # how gpu_check.sh made convkit importable
    args = ap.parse_args(argv)
    args.only = args.only or list(DRY_RUN_EXPERIMENTS if args.dry_run else GPU_EXPERIMENTS)
    # train-all runs from the checkout: absolute paths mean the same to it and to this process
    args.data, args.out_dir = args.data.resolve(), args.out_dir.resolve()
    args.runs_dir = (args.runs_dir or args.out_dir / "runs").resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns 0 when every experiment finished (on CUDA unless --dry-run), 1 otherwise, 2 when
    torch is too old or the datasets are missing."""
    t0 = time.perf_counter()
    args = parse_args(argv)
    import torch

    if version_tuple(torch.__version__) < MIN_TORCH:
        print(f"error: torch {torch.__version__} found; convkit needs torch ≥ {'.'.join(map(str, MIN_TORCH))}",
              file=sys.stderr)
        return 2
    have_data = (args.data / "MNIST" / "raw").is_dir() and (args.data / "cifar10-jpeg.tar.gz").is_file()
    if not args.dry_run and not have_data:
        print("error: " + DATA_HELP.format(data=args.data), file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    notes = []
    export = machine["onnxscript"]
    if not export:
        notes.append("onnxscript is not installed: torch's ONNX exporter needs it, so export and ORT evaluation "
                     "were skipped (put its wheels in devdata/wheels; see scripts/gpu_check.sh)")
    if "CUDAExecutionProvider" not in machine["ort_providers"]:
        notes.append("onnxruntime has no CUDA provider here (CPU-only `onnxruntime` wheel): "
                     "ORT CUDA latency not measured")
    env = installed_env(os.environ)
    log = args.out_dir / "train-all.log"
    cmd = train_all_command(args, args.only, export)
    print("running: " + " ".join(cmd[1:]), flush=True)
    rc, suite_wall = run_bounded(cmd, log, args.budget_s, env)
    from convkit.train.config import TrainOverrides, resolve_config

    # resolve_config gives each run folder's path (device plays no part in it)
    overrides = TrainOverrides(sample=args.dry_run, out=args.runs_dir, device="cpu")
    run_dirs = {name: Path(resolve_config(name, overrides).run_dir) for name in args.only}
    rows = [experiment_row(name, run_dir) for name, run_dir in run_dirs.items()]
    report = {"dry_run": args.dry_run, "install": args.install, "command": cmd[1:], "train_all_exit": rc,
              "budget_s": args.budget_s, "suite_wall_s": suite_wall, "log": str(log), "machine": machine,
              "experiments": rows, "notes": notes,
              "log_tail": log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]}
    report["problems"] = problems_of(report)
    report["result"] = "FAILED" if report["problems"] else "OK"
    report["check_wall_s"] = time.perf_counter() - t0
    write_json(args.out_dir / "gpu_check.json", report)
    write_text(args.out_dir / "gpu_check.md", markdown(report))
    print(markdown(report))
    print(f"wrote {args.out_dir / 'gpu_check.json'} and {args.out_dir / 'gpu_check.md'}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

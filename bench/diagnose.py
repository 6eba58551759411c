"""int8 with and without ``--keep-fp32 auto`` on the suite's residual and table-5 CNNs, and what ``convkit diagnose``
costs per model (not a test).

    python bench/diagnose.py --out /tmp/bench-diagnose                  # 1 epoch on the embedded sample, CPU
    python bench/diagnose.py --out DIR --epochs 10 --data-dir DATA      # real data

Each experiment is trained (CPU, no compile), exported with --precision int8 (the gate's verdict kept), exported
again with --keep-fp32 auto into a second folder, and diagnosed. Prints a Markdown table: PyTorch top-1 on the
parity images, full int8's and the repaired file's drop in points, the groups kept, the speed-up over fp32 at
batch 1 and 64 (median latency ratio on this machine's CPU, measured in the same process), and the seconds each
step took. Timings on a shared CPU swing: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from convkit.errors import ConvkitError
from convkit.export.diagnose import diagnose
from convkit.export.pipeline import ExportSettings, export_checkpoint

EXPERIMENTS = ("t2-residual-cnn", "t4-residual", "t5-custom-conv", "t5-attention", "t5-custom-activation",
               "t5-custom-pooling")


def train(out: Path, experiment: str, epochs: int, data_dir: str | None) -> Path:
    """Train ``experiment`` on CPU and return its run folder."""
    from convkit.train import TrainOverrides, resolve_config, train_experiment

    overrides = TrainOverrides(epochs=epochs, device="cpu", sample=data_dir is None, out=out, compile=False,
                               data_dir=data_dir)
    cfg = resolve_config(experiment, overrides)
    train_experiment(cfg, quiet=True)
    return Path(cfg.run_dir)


def export(run: Path, out: Path, keep: str | None) -> tuple[dict, float]:
    """Export ``run``'s checkpoint into ``out`` with int8 (and ``keep``); returns (export.json, seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    settings = ExportSettings(precisions=("int8",), keep_fp32=keep, device="cpu")
    try:
        doc = export_checkpoint(run / "checkpoint.pt", None, out, settings)
    except ConvkitError:  # a failed gate still wrote export.json
        import json

        doc = json.loads((out / "export.json").read_text())
    return doc, time.perf_counter() - t0


def row(name: str, plain: dict, fixed: dict, t_plain: float, t_fixed: float, diag: dict | None, t_diag: float) -> str:
    """Return one Markdown table row."""
    int8 = plain["precisions"]["int8"]
    section = fixed["precisions"]["int8"].get("keep_fp32") or {}
    lat = section.get("latency") or {}

    def sp(which, batch):
        value = ((lat.get(which) or {}).get(batch) or {}).get("speedup_vs_fp32")
        return "—" if value is None else f"{value:.2f}×"

    kept = ", ".join((k["module"] or {}).get("path") or k["tensor"] for k in section.get("kept", [])) or "none"
    final_drop = (section.get("final") or {}).get("gate", {}).get("drop_points")
    culprit = "—"
    if diag and diag["sections"].get("int8", {}).get("measured"):
        top = diag["sections"]["int8"]["measured"][0]
        module = top["module"] or {}
        culprit = (f"`{top['tensor']}` of {module.get('path') or 'input'} ({module.get('class', '—')}): "
                   f"{top['flips_removed']} flips, {top['gain_points']:+.1f} pts")
    return (f"| {name} | {plain['pytorch_test_acc']:.4f} | {int8['gate']['drop_points']:+.2f} "
            f"({'pass' if int8['gate']['passed'] else 'FAIL'}) | {section.get('verdict', '—')} | {kept} | "
            f"{'—' if final_drop is None else f'{final_drop:+.2f}'} | {sp('full_int8', '1')} / {sp('full_int8', '64')} | "
            f"{sp('kept', '1')} / {sp('kept', '64')} | {culprit} | {t_plain:.0f} | {t_fixed:.0f} | {t_diag:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="Working folder (runs and exports go there).")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data-dir", default=None, help="Real data (default: the embedded sample).")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    args = ap.parse_args()
    out = Path(args.out)
    print("| experiment | PyTorch top-1 | int8 drop pts (gate) | --keep-fp32 auto | kept fp32 | drop kept | "
          "full int8 speed-up b1 / b64 | kept speed-up b1 / b64 | diagnose: top culprit | export s | "
          "export auto s | diagnose s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.experiments.split(","):
        try:
            run = train(out / "runs", name, args.epochs, args.data_dir)
            plain, t_plain = export(run, run, None)  # into the run folder, which diagnose reads
            fixed, t_fixed = export(run, out / "auto" / name, "auto")
            t0 = time.perf_counter()
            diag = diagnose(run, n_images=1000)
            print(row(name, plain, fixed, t_plain, t_fixed, diag, time.perf_counter() - t0), flush=True)
        except Exception as exc:  # one model failing never stops the others
            print(f"| {name} | error: {type(exc).__name__}: {str(exc)[:200]} |", flush=True)


if __name__ == "__main__":
    main()

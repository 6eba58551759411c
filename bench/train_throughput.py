"""Training throughput, eager vs torch.compile, for every model of a suite on one device (a benchmark, not a test).

    python bench/train_throughput.py --device cpu [--only 't1-*'] [--steps 5] [--batch-size 128] [--json out.json]

For each model: a warm-up (absorbing compile time, reported on its own), then ``--steps`` timed train steps
(forward, backward, AdamW step) on a fixed random batch, device synchronized before each clock reading;
the median step time gives samples/s. Eager and compiled figures come from the same process, so their
ratio is meaningful even on a noisy machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import time

import torch
import torch.nn.functional as F

from convkit.compilation import compile_model
from convkit.envinfo import environment
from convkit.models import create_model
from convkit.suite import SUITES
from convkit.train.loop import autocast, synchronize


def time_steps(model, x, y, steps: int, amp: str) -> tuple[float, float]:
    """Return (first-step seconds incl. any compile, median seconds of the next ``steps`` train steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    synchronize(x.device)
    t0 = time.perf_counter()
    step()
    synchronize(x.device)
    first = time.perf_counter() - t0
    step()  # second call: some backends finish lazy initialisation here
    times = []
    for _ in range(steps):
        synchronize(x.device)
        t0 = time.perf_counter()
        step()
        synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench(device: str, only: str, steps: int, batch_size: int, compile_: bool) -> dict:
    """Return {"rows": [...], "environment": ..., "method": ...} for every selected seed experiment's model."""
    dev = torch.device(device)
    amp = "bf16" if dev.type == "cuda" else "none"
    rows, seen = [], set()
    for exp in SUITES["seed"]:
        if not fnmatch.fnmatch(exp.name, only) or exp.model in seen:
            continue
        seen.add(exp.model)
        torch.manual_seed(0)
        eager = create_model(exp.model).to(dev)
        shape = eager.default_cfg.input_shape
        x = torch.randn(batch_size, *shape, device=dev)
        y = torch.randint(0, 10, (batch_size,), device=dev)
        first_e, med_e = time_steps(eager, x, y, steps, amp)
        row = {"experiment": exp.name, "model": exp.model, "eager_samples_per_s": batch_size / med_e,
               "eager_first_step_s": first_e}
        if compile_:
            compiled = compile_model(eager)
            first_c, med_c = time_steps(compiled, x, y, steps, amp)
            row.update(compiled_samples_per_s=batch_size / med_c, compile_first_step_s=first_c,
                       speedup=med_e / med_c)
        rows.append(row)
        print(f"{exp.model:<26} eager {row['eager_samples_per_s']:>9.1f}/s"
              + (f"  compiled {row['compiled_samples_per_s']:>9.1f}/s  ×{row['speedup']:.2f}"
                 f"  (first step {first_c:.1f}s)" if compile_ else ""), flush=True)
    return {
        "rows": rows,
        "method": f"batch {batch_size}, random inputs, AdamW; 2 warm-up steps then median of {steps} timed steps, "
                  f"device synchronized around each; amp={amp}",
        "environment": environment(dev),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", default="*", help="glob over seed experiment names")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--json", default="bench/train_throughput.json")
    a = p.parse_args()
    result = bench(a.device, a.only, a.steps, a.batch_size, not a.no_compile)
    with open(a.json, "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()

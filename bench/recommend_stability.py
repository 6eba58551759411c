"""Is the deployment recommendation stable? The same `convkit evaluate` command run N times (not a test).

Each run's eval.json gives the recommended configuration and the ones it ties with. The command is stable when
every run names the same configuration, or states a tie that includes it (a run that names another configuration
without stating a tie is a flip: the defect of issue 31).

    python bench/recommend_stability.py                       # a small CNN exported with fp32 + int8 (below)
    python bench/recommend_stability.py --folder RUN_OR_MODEL_FOLDER --runs 5 -- --batch-sizes 1,8,64

Default model: a small CNN (two 3×3 convolutions, seeded weights) exported with
`convkit export --model <pkg>:build --dataset cifar10 --sample --precision int8`, then evaluated with
`convkit evaluate FOLDER --provider cpu --threads 1 --batch-sizes 1,8,64 --min-seconds 0.3`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

NET = textwrap.dedent('''
    import torch
    import torch.nn as nn


    def build(num_classes=10):
        torch.manual_seed(0)  # the same weights whenever it is built: export and evaluate's reference agree
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(128, num_classes))
''')
EVAL_ARGS = ["--provider", "cpu", "--threads", "1", "--batch-sizes", "1,8,64", "--min-seconds", "0.3"]


def export_small_model(root: Path) -> Path:
    """Export the small CNN with fp32 and int8 into ``root/model``; returns that folder."""
    (root / "stability_net").mkdir(parents=True)
    (root / "stability_net" / "__init__.py").write_text(NET)
    out = root / "model"
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(["convkit", "export", "--model", "stability_net:build", "--dataset", "cifar10", "--sample",
                    "--out", str(out), "--precision", "int8"], check=True, env=env)
    return out


def outcome(eval_json: Path) -> dict:
    """Return {"recommended", "tied", "text"} of one evaluation's recommendation."""
    rec = json.loads(eval_json.read_text()).get("recommendation") or {}
    best = rec.get("recommended") or {}
    return {"recommended": best.get("name"), "tied": rec.get("tied") or [], "text": rec.get("text", ""),
            "why_not": rec.get("why_not") or []}


def stable(outcomes: list[dict]) -> bool:
    """Return True when every run names the most frequent recommendation, or states a tie that includes it."""
    names = [o["recommended"] for o in outcomes]
    mode = max(set(names), key=names.count)
    return all(o["recommended"] == mode or mode in o["tied"] for o in outcomes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=None, help="model or run folder (default: export the small CNN)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the outcomes as JSON here")
    ap.add_argument("eval_args", nargs="*", help=f"evaluate's options after -- (default: {' '.join(EVAL_ARGS)})")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        folder = args.folder or export_small_model(Path(tmp))
        command = ["convkit", "evaluate", str(folder)] + (args.eval_args or EVAL_ARGS)
        outcomes = []
        for i in range(args.runs):
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL)  # exit 1 (a gate) still writes eval.json
            outcomes.append(outcome(folder / "eval.json"))
            o = outcomes[-1]
            print(f"run {i + 1}: {o['recommended']}" + (f" (TIE with {', '.join(o['tied'])})" if o["tied"] else ""),
                  flush=True)
    result = {"command": " ".join(command), "runs": args.runs, "outcomes": outcomes, "stable": stable(outcomes),
              "distinct_recommendations": sorted({str(o["recommended"]) for o in outcomes})}
    print(json.dumps({k: v for k, v in result.items() if k != "outcomes"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if result["stable"] else 1


if __name__ == "__main__":
    sys.exit(main())

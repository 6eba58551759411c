"""``export --precision int8 --keep-fp32 auto|NAME,...``: the int8 file with some tensor groups left in fp32, the
set measured on the parity images, timed against fp32 and the full int8 file, and recorded in the file's metadata
and export.json (``precisions.int8.keep_fp32``).

``auto`` runs convkit.export.int8_sensitivity's greedy search until the int8 gate passes; names are tensor
groups (their head tensor, as ``convkit diagnose`` lists them) or PyTorch module paths (``layer3.1.conv2``). The
three calibration methods ONNX Runtime offers are measured side by side on the same images; the file uses the one
asked for (``--calibration``, MinMax by default), and a better one is pointed out, never silently switched to.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from convkit.errors import ConvkitError
from convkit.evaluate.latency import Timing, compare_latency, measure
from convkit.export import int8_sensitivity as sens
from convkit.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from convkit.export.quantize import prepare_int8
from convkit.providers import ProviderConfig, make_session

AUTO = "auto"
METADATA_KEY = "int8_keep_fp32"  # the ONNX metadata key holding the JSON list of groups kept fp32
LATENCY_BATCHES = (1, 64)
LATENCY_TIMING = Timing(warmup=5, runs=30, min_seconds=0.3)


def parse_keep(text: str | None) -> str | tuple[str, ...] | None:
    """Return AUTO, a tuple of names, or None from ``--keep-fp32``; ConvkitError (exit 2) when empty."""
    if text is None:
        return None
    if text.strip() == AUTO:
        return AUTO
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConvkitError("--keep-fp32 takes auto or tensor/module names separated by commas")
    return names


def resolve_names(names: tuple[str, ...], cands: dict) -> list[str]:
    """Return the candidate tensors ``names`` pick (a head tensor, or every group from a module path);
    ConvkitError (exit 2) naming the unknown ones and some known ones."""
    picked, unknown = [], []
    for name in names:
        hits = [t for t, c in cands.items() if t == name or (c.module is not None and c.module.path == name)]
        (picked.extend(hits) if hits else unknown.append(name))
    if unknown:
        known = ", ".join(sorted({c.module.path for c in cands.values() if c.module} | set(cands))[:12])
        raise ConvkitError(f"--keep-fp32: {', '.join(map(repr, unknown))} is no quantized tensor or module of this "
                           f"model; known: {known} (convkit diagnose lists them)")
    return list(dict.fromkeys(picked))


def latency_rows(proto, x: np.ndarray, provider: str = "cpu") -> dict[str, dict]:
    """Return {batch: latency statistics} of ``proto`` on ``provider`` for each of LATENCY_BATCHES."""
    session = make_session(proto.SerializeToString(), ProviderConfig(provider))
    rows = {}
    for batch in LATENCY_BATCHES:
        feed = {INPUT_NAME: np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))}
        rows[str(batch)] = measure(lambda: session.run([OUTPUT_NAME], feed), batch, LATENCY_TIMING)
    return rows


def speed(rows: dict, fp32: dict) -> dict:
    """Return per batch: p50 ms, speed-up over fp32 (fp32 p50 ÷ this p50) and compare_latency's verdict."""
    out = {}
    for batch, row in rows.items():
        cmp = compare_latency(row, fp32[batch])
        out[batch] = {"p50_ms": row["p50_ms"], "p50_ci_ms": row["p50_ci_ms"],
                      "speedup_vs_fp32": fp32[batch]["p50_ms"] / row["p50_ms"] if row["p50_ms"] else None,
                      "vs_fp32": cmp["verdict"], "ratio_ci": cmp["ratio_ci"]}
    return out


def int8_keeping_fp32(fp32_proto, calib: np.ndarray, x: np.ndarray, reference_logits: np.ndarray,
                      labels: np.ndarray, limits: dict, method: str, keep, provider: str = "cpu") -> tuple:
    """Return (int8 ModelProto, export.json's ``keep_fp32`` section) for ``keep`` (AUTO or names).

    The section holds the groups kept (tensors, nodes, PyTorch modules), each step of the search with its top-1,
    flips against fp32 and latency, the speed kept against fp32 and the full int8 file, the calibration methods
    compared, and ``verdict``: "repaired", "not repairable" (no set passes: never recommended) or "kept as asked".
    """
    with tempfile.TemporaryDirectory(prefix="convkit-keep-fp32-") as tmp:
        prepared, _ = prepare_int8(fp32_proto)
        problem = sens.Problem(fp32_proto, prepared, calib, x, labels, reference_logits, limits, method, Path(tmp),
                               provider)
        full = sens.measure(problem, problem.quantize(), ())
        if keep == AUTO and full.gate["passed"]:  # nothing to repair: no search, the full file is timed
            report = {"_full": full, "_candidates": {}, "full_int8": full.to_dict(), "measured": [], "ranked": [],
                      "sqnr_images": 0, "test": None}
        else:
            report = sens.sensitivity(problem, full=full)
        cands = report["_candidates"]
        if keep == AUTO and full.gate["passed"]:
            kept, final, steps, verdict = [], full, [], "full int8 passes"
        elif keep == AUTO:
            search = sens.search_keep_fp32(problem, report)
            kept, final, steps = [k["tensor"] for k in search["kept"]], search["_final"], search["steps"]
            verdict = "repaired" if search["passed"] else "not repairable"
        else:
            kept = resolve_names(tuple(keep), cands)
            nodes = tuple(dict.fromkeys(n for t in kept for n in cands[t].nodes))
            final = sens.measure(problem, problem.quantize(nodes), tuple(kept), report["_full"])
            steps, verdict = [], "kept as asked"
        methods = sens.compare_methods(problem, report["_full"])
        timed = timings(problem, report["_full"], steps, final, x)
    section = {
        "requested": keep if keep == AUTO else list(keep), "kept": [cands[t].to_dict() for t in kept],
        "verdict": verdict, "passed": bool(final.gate["passed"]), "calibration_method": method,
        "full_int8": report["full_int8"], "final": final.to_dict(),
        "steps": [sens.strip_private(s) for s in steps], "latency": timed,
        "calibration_methods": methods, "better_calibration": better_method(methods, method),
        "sensitivity": sens.strip_private({k: report[k] for k in ("measured", "ranked", "sqnr_images", "test")}),
        "strategy": "greedy over tensor groups by images flipped against fp32, then top-1 "
                    "(convkit.export.int8_sensitivity)",
        "selection": "the set is chosen and gated on the same parity images: confirm it with convkit evaluate on "
                     "the whole test split",
    }
    if keep == AUTO and not final.gate["passed"]:
        section["note"] = "no set of groups kept in fp32 passes the int8 gate: do not ship int8 for this model"
    if timed["kept"] and any(b["vs_fp32"] == "slower" for b in timed["kept"].values()):
        section["slower_than_fp32"] = True
        section["note"] = (section.get("note", "") + "; " if section.get("note") else "") + \
            "the int8 file with this set is slower than fp32 here: keep fp32"
    return final.proto, section


def timings(problem, full, steps: list[dict], final, x: np.ndarray) -> dict:
    """Return the latency of fp32, the full int8 file, every step of the search and the file written."""
    fp32 = latency_rows(problem.fp32, x, problem.provider)
    out = {"provider": problem.provider, "timing": LATENCY_TIMING.to_dict(), "batches": list(LATENCY_BATCHES),
           "fp32": speed(fp32, fp32), "full_int8": speed(latency_rows(full.proto, x, problem.provider), fp32),
           "steps": [], "kept": None}
    for step in steps:
        out["steps"].append({"kept_fp32": list(step["_trial"].kept),
                             **speed(latency_rows(step["_trial"].proto, x, problem.provider), fp32)})
    if final is full:
        out["kept"] = out["full_int8"]
    elif steps and final is steps[-1]["_trial"]:
        out["kept"] = {k: v for k, v in out["steps"][-1].items() if k != "kept_fp32"}
    else:
        out["kept"] = speed(latency_rows(final.proto, x, problem.provider), fp32)
    return out


def better_method(methods: list[dict], used: str) -> str | None:
    """Return a sentence naming a calibration method whose top-1 beats ``used`` beyond noise, else None."""
    better = [m for m in methods if m.get("method") != used and m.get("vs_full_int8")
              and m["vs_full_int8"]["distinguishable"] and m["vs_full_int8"]["delta"] > 0]
    if not better:
        return None
    best = max(better, key=lambda m: m["accuracy"])
    return (f"{best['method']} calibration is better than {used} beyond noise ({best['accuracy']:.4f} top-1; "
            f"McNemar p = {best['vs_full_int8']['p_value']:.2g}): try --calibration {best['method'].lower()}")


def metadata_value(section: dict) -> str:
    """Return the ONNX metadata value recording the groups kept fp32 (JSON: tensor, module path, nodes)."""
    return json.dumps([{"tensor": k["tensor"], "module": (k["module"] or {}).get("path"), "nodes": k["nodes"]}
                       for k in section["kept"]])


def describe_section(section: dict) -> str:
    """Return the keep_fp32 section in one line: the groups kept, the accuracy against PyTorch, the speed kept."""
    names = ", ".join(f"{(k['module'] or {}).get('path') or k['tensor']}" for k in section["kept"]) or "nothing"
    final = section["final"]
    drop = final["gate"].get("drop_points")
    text = f"int8 keeping fp32: {names}; {0.0 - drop + 0.0:+.2f} pts vs PyTorch" if drop is not None else f"kept {names}"
    lat = section["latency"]
    kept, full = (lat.get("kept") or {}).get("1"), (lat.get("full_int8") or {}).get("1")
    if kept and full and kept.get("speedup_vs_fp32") and full.get("speedup_vs_fp32"):
        text += (f", {kept['speedup_vs_fp32']:.2f}× fp32 speed at batch 1 (full int8 "
                 f"{full['speedup_vs_fp32']:.2f}×)")
    if section["verdict"] == "not repairable":
        text += "; no set passes the int8 gate: not recommended"
    if section.get("slower_than_fp32"):
        text += "; slower than fp32: keep fp32"
    return text

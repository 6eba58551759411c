"""A deployment recommendation from what ``convkit evaluate`` measured for one model.

Pure functions over an EvalResult (its ``accuracy``, ``latency`` and ``serving.scenarios`` sections): no I/O, no
ONNX Runtime, so the logic is unit-tested on synthetic results (EvalResult.from_json of a few sections).

Every measured configuration (precision × provider × backend × batch size, or a LoadGen scenario with its SUT
settings) is a candidate. A candidate qualifies when its precision passes the accuracy gate
(``convkit.gates.MAX_ACC_DROP`` points, against PyTorch when the run's checkpoint was at hand, else against
the fp32 file on the same provider) and its p99 latency is within the bound. Among those, the highest
throughput wins (``objective="throughput"``) or the lowest p99 (``objective="latency"``).
Offline results are left out: Offline has no latency bound, so it cannot show a configuration meets one.
"""

from __future__ import annotations

from convkit.evaluate.result import EvalResult
from convkit.gates import LATENCY_BOUND_MS, MAX_ACC_DROP, Limits, judge
from convkit.uncertainty import Interval, pair_level, ratio_interval

# Backends whose figures describe serving from host memory; device-resident ("ort", "ort-cudagraph" on a GPU)
# figures are kept too, labelled by backend.
_SKIP_BACKENDS = ("torch-eager", "torch-compile")


def accuracy_verdicts(result: EvalResult, max_drop: dict | None = None) -> dict:
    """Return {(precision, provider): {"accuracy", "drop_points", "max_drop_points", "passed", "against"}}."""
    limits = {**MAX_ACC_DROP, **(max_drop or {})}
    entries = result.accuracy or []
    fp32 = {a["provider"]: a["accuracy"] for a in entries if a.get("precision") in ("fp32", "model")}
    out = {}
    for a in entries:
        prec, kind = a.get("precision"), a.get("provider")
        limit = limits.get(prec, limits["fp32"])
        if a.get("gate"):
            g = a["gate"]
            out[(prec, kind)] = {"accuracy": a["accuracy"], "drop_points": g["drop_points"],
                                 "max_drop_points": g["max_drop_points"], "passed": bool(g["passed"]),
                                 "against": "PyTorch", "reasons": g.get("reasons") or []}
        elif kind in fp32 and a.get("accuracy") is not None:
            verdict = judge(Limits(limit), accuracy=a["accuracy"], reference_accuracy=fp32[kind])
            out[(prec, kind)] = {"accuracy": a["accuracy"], **verdict.checks, "passed": verdict.passed,
                                 "against": "fp32 ONNX"}
    return out


def candidates(result: EvalResult) -> list[dict]:
    """Return every measured configuration as {"name", "precision", "provider", "source", "batch", "threads",
    "throughput" (images/s), "p99_ms", "p50_ms"}: the latency table's ORT rows and the LoadGen scenarios."""
    opts = (result.providers or {}).get("options") or {}
    out = []
    for r in result.latency or []:
        if r.get("backend") in _SKIP_BACKENDS or not r.get("images_per_s"):
            continue
        threads = (opts.get(r["provider"]) or {}).get("intra_op_num_threads")
        name = f"{r['precision']} {r['provider']} {r['backend']} batch {r['batch']}"
        out.append({"name": name + (f", {threads} threads" if threads else ""), "precision": r["precision"],
                    "provider": r["provider"], "source": r["backend"], "batch": r["batch"], "threads": threads,
                    "throughput": r["images_per_s"], "p99_ms": r.get("p99_ms"), "p50_ms": r.get("p50_ms"),
                    "p50_ci_pair_ms": r.get("p50_ci_pair_ms")})
    for s in (result.serving or {}).get("scenarios") or []:
        if s.get("scenario") in ("offline", "accuracy", None) or not s.get("qps"):
            continue
        if s.get("scenario") == "server" and not s.get("peak_found", True):
            continue  # no tried QPS met the bound: nothing to deploy from that search
        batch = s.get("sut_max_batch")
        name = (f"{s['precision']} {s['provider']} LoadGen {s['scenario']}, max batch {batch}, "
                f"{s.get('sut_workers', 1)} worker(s) × {s.get('sut_intra_op_threads')} threads")
        out.append({"name": name, "precision": s["precision"], "provider": s["provider"],
                    "source": f"loadgen-{s['scenario']}", "batch": batch, "threads": s.get("sut_intra_op_threads"),
                    "throughput": s["qps"], "p99_ms": s.get("p99_ms"), "p50_ms": s.get("p50_ms"),
                    "valid": s.get("valid")})
    return out


def versus(best: dict, other: dict | None) -> dict | None:
    """Return how ``best`` stands against ``other`` per image: {"ratio", "ratio_ci", "verdict"}, the ratio being
    best's batch p50 per image ÷ other's (from their 97.5 % median intervals: at least 95 %). ``verdict`` is
    "better" only when the interval lies below 1, "tie" otherwise, "no interval" when either figure has none
    (LoadGen figures, or too few timed calls); None without ``other``."""
    if other is None:
        return None
    if not best.get("p50_ci_pair_ms") or not other.get("p50_ci_pair_ms"):
        return {"ratio": None, "ratio_ci": None, "verdict": "no interval"}

    def per_image(c):
        low, high = c["p50_ci_pair_ms"]
        return Interval(low / c["batch"], high / c["batch"], pair_level())

    ci = ratio_interval(per_image(best), per_image(other))
    ratio = (best["p50_ms"] / best["batch"]) / (other["p50_ms"] / other["batch"]) if other["p50_ms"] else None
    return {"ratio": ratio, "ratio_ci": ci.to_list() if ci else None,
            "verdict": "better" if ci is not None and ci.high < 1 else "tie" if ci is not None else "no interval"}


def _score(c: dict, objective: str) -> float:
    return -c["throughput"] if objective == "throughput" else (c["p99_ms"] if c["p99_ms"] is not None else 1e30)


def _why_not(c: dict, best: dict | None, bound: float, gate: dict | None, objective: str) -> str:
    """Return one line saying why candidate ``c`` lost (to ``best``, or to the bound or the gate)."""
    if gate is not None and not gate["passed"] and gate.get("reasons"):  # e.g. top-1 disagreement, not the drop
        return f"{c['name']}: fails the accuracy gate ({'; '.join(gate['reasons'])})"
    if gate is not None and not gate["passed"]:
        return (f"{c['name']}: fails the accuracy gate ({gate['drop_points']:.2f} points below {gate['against']}, "
                f"max {gate['max_drop_points']:g})")
    if c["p99_ms"] is None or c["p99_ms"] > bound:
        p99 = "unknown" if c["p99_ms"] is None else f"{c['p99_ms']:.3g} ms"
        return f"{c['name']}: p99 {p99} exceeds the {bound:g} ms bound"
    if best is None:
        return c["name"]
    if objective == "latency":
        return f"{c['name']}: p99 {c['p99_ms']:.3g} ms vs {best['p99_ms']:.3g} ms"
    ratio = best["throughput"] / c["throughput"] if c["throughput"] else float("inf")
    where = "on this CPU" if c["provider"] == "cpu" else f"on {c['provider']}"
    same = best["batch"] == c["batch"] and best["source"] == c["source"]
    if same and best["precision"] != c["precision"] and best["provider"] == c["provider"]:
        return (f"{c['precision']}: {ratio:.1f}× slower than {best['precision']} at batch {c['batch']} {where} "
                f"({c['source']})")
    return f"{c['name']}: {ratio:.1f}× less throughput than the recommendation (p99 {c['p99_ms']:.3g} ms)"


def withheld_reason(result: EvalResult) -> str | None:
    """Return why no configuration may be recommended — degenerate outputs, or preprocessing the probe could not
    verify on a model with no PyTorch reference (the accuracy gate then means nothing) — else None."""
    degenerate = [a for a in result.accuracy or [] if a.get("degenerate")]
    if degenerate:
        return f"the outputs are degenerate ({degenerate[0]['degenerate']})"
    pre = result.preprocessing or {}
    if result.pytorch is None and pre.get("verdict") == "unverified":
        return ("the preprocessing is unverified (the probe found better values than the defaulted ones) and there "
                "is no PyTorch reference to check the accuracy against")
    return None


def recommend(result: EvalResult, latency_bound_ms: float = LATENCY_BOUND_MS, objective: str = "throughput",
              max_drop: dict | None = None) -> dict:
    """Return the deployment recommendation for the model of ``result`` (an EvalResult).

    Keys: ``recommended`` and ``runner_up`` (candidates as in ``candidates``, or None), ``versus_runner_up``
    (``versus``: the recommendation is better only beyond the interval, else the text says they tie), ``met``
    (whether any configuration qualifies), ``why_not`` (one line per other precision × provider × source: its best
    configuration and why it lost), ``text`` (one paragraph), ``objective``, ``latency_bound_ms``,
    ``accuracy_gate`` ({"<precision> <provider>": verdict}).
    """
    if objective not in ("throughput", "latency"):
        raise ValueError(f"objective must be 'throughput' or 'latency', not {objective!r}")
    withheld = withheld_reason(result)
    if withheld:
        return {"objective": objective, "latency_bound_ms": latency_bound_ms, "met": False, "recommended": None,
                "runner_up": None, "why_not": [], "withheld": withheld,
                "text": f"no recommendation: {withheld}", "accuracy_gate": {}}
    gates = accuracy_verdicts(result, max_drop)
    cands = sorted(candidates(result), key=lambda c: _score(c, objective))

    def qualifies(c):
        gate = gates.get((c["precision"], c["provider"]))
        return (gate is None or gate["passed"]) and c["p99_ms"] is not None and c["p99_ms"] <= latency_bound_ms

    ok = [c for c in cands if qualifies(c)]
    best = ok[0] if ok else None
    runner = next((c for c in ok[1:] if (c["precision"], c["provider"], c["source"]) !=
                   (best["precision"], best["provider"], best["source"])), ok[1] if len(ok) > 1 else None)
    why = []
    groups: dict = {}
    for c in cands:  # per other precision × provider × source: its best qualifying configuration, else its best
        groups.setdefault((c["precision"], c["provider"], c["source"]), []).append(c)
    for key, group in groups.items():
        if best is not None and key == (best["precision"], best["provider"], best["source"]):
            continue
        c = next((g for g in group if qualifies(g)), group[0])
        why.append(_why_not(c, best, latency_bound_ms, gates.get((c["precision"], c["provider"])), objective))
    separation = versus(best, runner) if best is not None else None
    return {"objective": objective, "latency_bound_ms": latency_bound_ms, "met": best is not None,
            "recommended": best, "runner_up": runner, "why_not": why, "versus_runner_up": separation,
            "text": _text(best, runner, cands, latency_bound_ms, objective) + _tie_text(runner, separation),
            "accuracy_gate": {f"{p} {k}": v for (p, k), v in gates.items()}}


def _tie_text(runner: dict | None, separation: dict | None) -> str:
    """Return the sentence saying whether the recommendation beats the runner-up beyond noise."""
    if runner is None or separation is None:
        return ""
    if separation["verdict"] == "no interval":
        return ("; no interval on one of the two figures (LoadGen, or too few timed calls): the lead is a "
                "point comparison")
    low, high = separation["ratio_ci"]
    if separation["verdict"] == "tie":
        return (f"; it TIES with the runner-up: per-image p50 ratio {separation['ratio']:.2f} [{low:.2f}, "
                f"{high:.2f}] holds 1, so either will do")
    return (f"; better than the runner-up beyond noise (per-image p50 ratio {separation['ratio']:.2f} "
            f"[{low:.2f}, {high:.2f}])")


def _text(best, runner, cands, bound, objective) -> str:
    if not cands:
        return "no configuration was measured: nothing to recommend"
    if best is None:
        closest = min(cands, key=lambda c: c["p99_ms"] if c["p99_ms"] is not None else 1e30)
        p99 = "unknown" if closest["p99_ms"] is None else f"{closest['p99_ms']:.3g} ms"
        return (f"nothing meets the {bound:g} ms p99 bound within the accuracy gate; the lowest p99 is "
                f"{closest['name']} at {p99}")
    goal = "highest throughput" if objective == "throughput" else "lowest p99"
    text = (f"deploy {best['name']}: {best['throughput']:,.0f} images/s at p99 {best['p99_ms']:.3g} ms, the {goal} "
            f"within the {bound:g} ms bound and the accuracy gate")
    if not best["source"].startswith("loadgen-"):
        text += (" (a closed-loop figure: the batch is assembled before the clock starts, so the wait for "
                 "requests to fill it is not included; LoadGen's Server scenario measures that)")
    if runner is not None:
        text += f"; runner-up {runner['name']} ({runner['throughput']:,.0f} images/s, p99 {runner['p99_ms']:.3g} ms)"
    return text

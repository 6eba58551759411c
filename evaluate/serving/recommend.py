"""A deployment recommendation from what ``convkit evaluate`` measured for one model.

Pure functions over an EvalResult (its ``accuracy``, ``latency`` and ``serving.scenarios`` sections): no I/O, no
ONNX Runtime, so the logic is unit-tested on synthetic results (EvalResult.from_json of a few sections).

Every configuration of the latency table (precision × provider × backend × batch size) is a candidate. It
qualifies when its precision passes the accuracy gate (``convkit.gates.MAX_ACC_DROP`` points, against PyTorch when
the run's checkpoint was at hand, else against the fp32 file on the same provider) and its p99 meets the bound
beyond noise (the p99's order-statistic interval lies under it). The bound is ``--latency-bound-ms``, else
``convkit.gates.LATENCY_BOUND_MS``, and the recommendation says which.

The qualifying ones are ranked on ONE statistic with an interval: median throughput, batch ÷ p50, whose interval
comes from the p50's order-statistic interval (``objective="throughput"``), or the p50 per call
(``"latency"``). Two configurations TIE whenever the interval of their ratio holds 1 (their intervals overlap),
and only then. A figure flagged UNSTABLE is re-measured before it is ranked (remeasure.py) or left unranked.
LoadGen's results are listed beside the recommendation, not ranked: they carry no per-call times.
"""

from __future__ import annotations

from convkit.evaluate.result import EvalResult
from convkit.gates import LATENCY_BOUND_MS, LATENCY_BOUND_SOURCE, MAX_ACC_DROP, Limits, judge
from convkit.uncertainty import Interval, as_interval, pair_level, ratio_interval

# Backends whose figures describe serving from host memory; device-resident ("ort", "ort-cudagraph" on a GPU)
# figures are kept too, labelled by backend.
_SKIP_BACKENDS = ("torch-eager", "torch-compile")
THROUGHPUT_BASIS = "median throughput: batch ÷ p50, interval from the p50's 97.5 % order-statistic interval"


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
    """Return every configuration of the latency table (ONNX Runtime rows: precision × provider × backend × batch)
    as {"name", "precision", "provider", "source", "batch", "threads", "throughput" (images/s, batch ÷ p50),
    "throughput_ci" (its interval from the p50's 97.5 % interval, or None), "p50_ms", "p50_ci_pair_ms", "p99_ms",
    "p99_ci_ms", "n", "unstable" (the reason, or None), "remeasured"}."""
    opts = (result.providers or {}).get("options") or {}
    out = []
    for r in result.latency or []:
        if r.get("backend") in _SKIP_BACKENDS or not r.get("p50_ms") or not r.get("batch"):
            continue
        threads = (opts.get(r["provider"]) or {}).get("intra_op_num_threads")
        name = f"{r['precision']} {r['provider']} {r['backend']} batch {r['batch']}"
        out.append(_with_figures({"name": name + (f", {threads} threads" if threads else ""),
                                  "precision": r["precision"], "provider": r["provider"], "source": r["backend"],
                                  "batch": r["batch"], "threads": threads, "remeasured": False}, r))
    return out


def _with_figures(c: dict, stats: dict) -> dict:
    """Return candidate ``c`` with the figures of latency statistics ``stats`` (a latency row or a re-measure)."""
    ci = as_interval(stats.get("p50_ci_pair_ms"), pair_level())
    thr_ci = Interval(c["batch"] * 1e3 / ci.high, c["batch"] * 1e3 / ci.low, ci.level) if ci and ci.low > 0 else None
    return {**c, "throughput": c["batch"] * 1e3 / stats["p50_ms"], "throughput_ci": thr_ci.to_list() if thr_ci else None,
            "throughput_basis": THROUGHPUT_BASIS, "p50_ms": stats["p50_ms"],
            "p50_ci_pair_ms": ci.to_list() if ci else None, "p99_ms": stats.get("p99_ms"),
            "p99_ci_ms": stats.get("p99_ci_ms"), "n": stats.get("n"), "unstable": stats.get("unstable"),
            **({"unstable_note": stats["unstable_note"]} if stats.get("unstable_note") else {})}


def loadgen_rows(result: EvalResult) -> list[str]:
    """Return one line per LoadGen result with a throughput: listed beside the recommendation, never ranked (LoadGen
    reports percentiles of its own run, not per-call times, so its throughput has no interval to rank with)."""
    out = []
    for s in (result.serving or {}).get("scenarios") or []:
        if s.get("scenario") in ("accuracy", None) or not s.get("qps"):
            continue
        p99 = "—" if s.get("p99_ms") is None else f"{s['p99_ms']:.3g} ms"
        out.append(f"{s['precision']} {s['provider']} LoadGen {s['scenario']}: {s['qps']:,.0f} samples/s, p99 {p99} "
                   f"(not ranked: LoadGen gives no per-call times, so no interval; see the Serving section)")
    return out


def _value(c: dict, objective: str) -> float:
    """Return the ranking statistic, larger is better: median throughput, or minus the p50 per call."""
    return c["throughput"] if objective == "throughput" else -c["p50_ms"]


def advantage(best: dict, other: dict, objective: str = "throughput") -> dict:
    """Return how ``best`` stands against ``other`` on the ranking statistic: {"ratio", "ratio_ci", "verdict"}.

    The ratio is best's median throughput ÷ other's (``objective="throughput"``), or other's p50 ÷ best's
    (``"latency"``): above 1 means best is ahead. Its interval is the ratio of the two 97.5 % intervals (at least
    95 %). ``verdict``: "better" when the interval lies above 1, "worse" below 1, "tie" when it holds 1 — the
    two intervals overlap — and "no interval" when either figure has none (too few timed calls).
    """
    if objective == "throughput":
        num, den = as_interval(best.get("throughput_ci"), pair_level()), as_interval(other.get("throughput_ci"),
                                                                                   pair_level())
        ratio = best["throughput"] / other["throughput"]
    else:
        num, den = as_interval(other.get("p50_ci_pair_ms"), pair_level()), as_interval(best.get("p50_ci_pair_ms"),
                                                                                     pair_level())
        ratio = other["p50_ms"] / best["p50_ms"]
    ci = ratio_interval(num, den)
    if ci is None:
        return {"ratio": ratio, "ratio_ci": None, "verdict": "no interval"}
    verdict = "better" if ci.low > 1 else "worse" if ci.high < 1 else "tie"
    return {"ratio": ratio, "ratio_ci": ci.to_list(), "verdict": verdict}


def versus(best: dict, other: dict | None, objective: str = "throughput") -> dict | None:
    """Return ``advantage(best, other)``, None without ``other``."""
    return None if other is None else advantage(best, other, objective)


def bound_check(c: dict, bound: float) -> str | None:
    """Return why ``c``'s p99 does not meet ``bound`` beyond noise, else None: above it, unknown, or its 95 %
    interval straddling it (a p99 that could land on either side in the next run is not counted as meeting it)."""
    if c["p99_ms"] is None:
        return "p99 unknown"
    ci = as_interval(c.get("p99_ci_ms"))
    if c["p99_ms"] > bound or (ci is not None and ci.low > bound):
        return f"p99 {_p99(c)} exceeds the {bound:g} ms bound"
    if ci is not None and ci.high > bound:
        return f"p99 {_p99(c)} may exceed the {bound:g} ms bound (its interval straddles it)"
    return None


def _p99(c: dict) -> str:
    ci = as_interval(c.get("p99_ci_ms"))
    return f"{c['p99_ms']:.3g} ms" + (f" [{ci.low:.3g}, {ci.high:.3g}]" if ci else "")


def _gate_reason(gate: dict | None) -> str | None:
    if gate is None or gate["passed"]:
        return None
    if gate.get("reasons"):  # e.g. top-1 disagreement, not the drop
        return f"fails the accuracy gate ({'; '.join(gate['reasons'])})"
    return (f"fails the accuracy gate ({gate['drop_points']:.2f} points below {gate['against']}, "
            f"max {gate['max_drop_points']:g})")


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
              max_drop: dict | None = None, bound_source: str | None = None, remeasure=None) -> dict:
    """Return the deployment recommendation for the model of ``result`` (an EvalResult).

    Ranks the latency table's configurations that pass the accuracy gate and meet the p99 bound on one statistic
    with an interval: median throughput (batch ÷ p50, ``objective="throughput"``) or the p50 per call
    (``"latency"``). A finalist flagged UNSTABLE is re-measured (``remeasure(candidates)`` → {name: latency
    statistics}: interleaved, more calls; remeasure.py) before it is ranked; one still unstable, or with no
    ``remeasure``, is not ranked and the text says so. Finalists whose intervals overlap the leader's TIE.

    Keys: ``recommended`` and ``runner_up`` (the first two of the ranking), ``versus_runner_up`` (``advantage``),
    ``tied`` (names tied with the recommendation), ``ranking`` (names in order), ``met``, ``why_not`` (one line per
    other configuration: why it lost), ``not_ranked`` (LoadGen results), ``text``, ``objective``,
    ``latency_bound_ms``, ``latency_bound_source``, ``statistic``, ``remeasured`` (names), ``accuracy_gate``.
    """
    if objective not in ("throughput", "latency"):
        raise ValueError(f"objective must be 'throughput' or 'latency', not {objective!r}")
    source = bound_source or LATENCY_BOUND_SOURCE
    base = {"objective": objective, "latency_bound_ms": latency_bound_ms, "latency_bound_source": source,
            "statistic": THROUGHPUT_BASIS if objective == "throughput" else "p50 per call, 97.5 % interval"}
    withheld = withheld_reason(result)
    if withheld:
        return {**base, "met": False, "recommended": None, "runner_up": None, "why_not": [], "withheld": withheld,
                "not_ranked": [], "tied": [], "ranking": [], "remeasured": [],
                "text": f"no recommendation: {withheld}", "accuracy_gate": {}}
    gates = accuracy_verdicts(result, max_drop)
    cands = candidates(result)
    reasons = {}
    for c in cands:
        reason = _gate_reason(gates.get((c["precision"], c["provider"]))) or bound_check(c, latency_bound_ms)
        if reason:
            reasons[c["name"]] = reason
    eligible = [c for c in cands if c["name"] not in reasons]
    eligible, remeasured = _settle(eligible, objective, remeasure)
    for c in eligible:
        if c["unstable"]:
            again = "even after re-measuring" if c["remeasured"] else "and was not re-measured"
            reasons[c["name"]] = f"not ranked: its figure is UNSTABLE ({c['unstable']}) {again}"
    ranked = _rank([c for c in eligible if not c["unstable"]], objective)
    best = ranked[0] if ranked else None
    tied = [c for c in ranked[1:] if advantage(best, c, objective)["verdict"] == "tie"] if best else []
    runner = ranked[1] if len(ranked) > 1 else None
    for c in ranked[1:]:
        reasons[c["name"]] = _lost(c, best, objective, gates)
    why = [f"{c['name']}: {reasons[c['name']]}" for c in sorted(cands, key=lambda c: _order(c, ranked))
           if c is not best and c["name"] in reasons]
    separation = versus(best, runner, objective) if best is not None else None
    unsettled = [c for c in eligible if c["unstable"]] + [c for c in cands if "may exceed" in reasons.get(c["name"], "")]
    contested = [c for c in unsettled if best is not None and _could_beat(c, best, objective)]
    short = "--latency-bound-ms" if source == "--latency-bound-ms" else "MLPerf's default"
    text = (_text(best, runner, cands, latency_bound_ms, short, objective, tied or contested) +
            _tie_text(runner, separation, objective, tied) + _contested_text(contested, reasons))
    return {**base, "met": best is not None, "recommended": best, "runner_up": runner, "versus_runner_up": separation,
            "tied": [c["name"] for c in tied + contested], "contested": [c["name"] for c in contested],
            "ranking": [c["name"] for c in ranked], "why_not": why,
            "not_ranked": loadgen_rows(result), "remeasured": remeasured, "text": text,
            "accuracy_gate": {f"{p} {k}": v for (p, k), v in gates.items()}}


def _could_beat(c: dict, best: dict, objective: str) -> bool:
    """Return True when unsettled candidate ``c``'s point figure reaches the recommendation's interval: it might
    be the better one, and only a settled figure could say."""
    if objective == "throughput":
        ci = best.get("throughput_ci")
        return c["throughput"] >= (ci[0] if ci else best["throughput"])
    ci = best.get("p50_ci_pair_ms")
    return c["p50_ms"] <= (ci[1] if ci else best["p50_ms"])


def _contested_text(contested: list[dict], reasons: dict) -> str:
    """Return the sentence naming the configurations that might beat the recommendation but could not be settled
    (UNSTABLE after re-measuring, or a p99 straddling the bound): the recommendation is then a stated tie."""
    if not contested:
        return ""
    parts = [f"{c['name']} ({c['throughput']:,.0f} images/s; {reasons[c['name']]})" for c in contested]
    return ("; UNDECIDED against " + "; ".join(parts) + ": its figure could be the better one but is not settled, "
            "so this is a tie until a quieter machine settles it")


def _order(c: dict, ranked: list[dict]) -> tuple:
    """Return the sort key of the why-not list: the ranking first, then the rest as measured."""
    names = [r["name"] for r in ranked]
    return (0, names.index(c["name"])) if c["name"] in names else (1, 0)


def _rank(cands: list[dict], objective: str) -> list[dict]:
    """Return ``cands`` best first on the statistic; those tied with the leader come right after it, and the
    first place among them goes to the lowest p50 per call (throughput) or the highest throughput (latency), so
    which of a tie is named does not hang on noise between the tied figures."""
    order = sorted(cands, key=lambda c: -_value(c, objective))
    if not order:
        return order
    tie = [order[0]] + [c for c in order[1:] if advantage(order[0], c, objective)["verdict"] == "tie"]
    secondary = (lambda c: c["p50_ms"]) if objective == "throughput" else (lambda c: -c["throughput"])
    tie = sorted(tie, key=secondary)
    return tie + [c for c in order if c not in tie]


def finalists(eligible: list[dict], objective: str, most: int = 4) -> list[dict]:
    """Return the configurations that could be first: the leader on the statistic, the second (so the first two
    are always compared on figures taken together), those whose interval reaches the leader's, and unstable ones
    whose point figure is within a factor of 2 of it (their interval cannot be trusted); at most ``most``, best
    first."""
    order = sorted(eligible, key=lambda c: -_value(c, objective))
    if not order:
        return []
    lead = order[0]
    near = [c for i, c in enumerate(order[1:]) if i == 0 or
            advantage(lead, c, objective)["verdict"] in ("tie", "no interval", "worse") or
            (c["unstable"] and _within_2x(c, lead, objective))]
    return ([lead] + near)[:most]


def _within_2x(c: dict, lead: dict, objective: str) -> bool:
    if objective == "throughput":
        return c["throughput"] * 2 >= lead["throughput"]
    return c["p50_ms"] <= 2 * lead["p50_ms"]


def _settle(eligible: list[dict], objective: str, remeasure) -> tuple[list[dict], list[str]]:
    """Return (the eligible candidates, finalists re-measured where any finalist is UNSTABLE; the names re-measured).

    Re-measured together (interleaved), the finalists' figures replace the latency table's: the ranking then
    compares figures taken over the same stretch of time. Repeated while the finalists change (at most 3 times)."""
    done: list[str] = []
    for _ in range(3):
        final = finalists(eligible, objective)
        if remeasure is None or not any(c["unstable"] for c in final) or all(c["name"] in done for c in final):
            break
        fresh = remeasure(final)
        done += [n for n in fresh if n not in done]
        eligible = [_with_figures({**c, "remeasured": True}, fresh[c["name"]]) if c["name"] in fresh else c
                    for c in eligible]
    return eligible, done


def _lost(c: dict, best: dict, objective: str, gates: dict) -> str:
    """Return why ranked configuration ``c`` is not the recommendation, with the ratio and its interval."""
    v = advantage(best, c, objective)
    stat = "median throughput" if objective == "throughput" else "p50 per call"
    band = f" [{v['ratio_ci'][0]:.2f}, {v['ratio_ci'][1]:.2f}]" if v["ratio_ci"] else ""
    figure = (f"{c['throughput']:,.0f} images/s" if objective == "throughput" else f"p50 {c['p50_ms']:.3g} ms")
    if v["verdict"] == "tie":
        return (f"TIES with the recommendation ({figure}; {stat} ratio {v['ratio']:.2f}{band} holds 1); named "
                f"second only because its {'p50 per call is higher' if objective == 'throughput' else 'throughput is lower'}")
    if v["verdict"] == "no interval":
        return f"{figure}, {v['ratio']:.2f}× behind on {stat} (no interval: too few timed calls)"
    return f"{figure}: the recommendation's {stat} is {v['ratio']:.2f}×{band} this one's, beyond noise"


def _tie_text(runner: dict | None, separation: dict | None, objective: str, tied: list[dict]) -> str:
    """Return the sentence saying whether the recommendation beats the runner-up beyond noise."""
    if runner is None or separation is None:
        return ""
    stat = "median-throughput" if objective == "throughput" else "p50"
    if separation["verdict"] == "no interval":
        return "; no interval on one of the two figures (too few timed calls): the lead is a point comparison"
    low, high = separation["ratio_ci"]
    if tied:
        names = ", ".join(c["name"] for c in tied)
        return (f"; it TIES with {names}: {stat} ratio {separation['ratio']:.2f} [{low:.2f}, {high:.2f}] holds 1, "
                f"so either will do (named first: the lower "
                f"{'latency per call' if objective == 'throughput' else 'throughput cost'})")
    return (f"; better than the runner-up beyond noise ({stat} ratio {separation['ratio']:.2f} "
            f"[{low:.2f}, {high:.2f}])")


def _text(best, runner, cands, bound, source, objective, tied) -> str:
    if not cands:
        return "no configuration was measured: nothing to recommend"
    if best is None:
        closest = min(cands, key=lambda c: c["p99_ms"] if c["p99_ms"] is not None else 1e30)
        p99 = "unknown" if closest["p99_ms"] is None else _p99(closest)
        return (f"nothing stable meets the {bound:g} ms p99 bound ({source}) within the accuracy gate; the lowest "
                f"p99 is {closest['name']} at {p99}")
    goal = "highest median throughput" if objective == "throughput" else "lowest p50 per call"
    ci = best.get("throughput_ci")
    thr = f"{best['throughput']:,.0f}" + (f" [{ci[0]:,.0f}, {ci[1]:,.0f}]" if ci else "")
    text = (f"{'TIE — ' if tied else ''}deploy {best['name']}: {thr} images/s (batch ÷ p50), p99 {_p99(best)}, the "
            f"{goal} within the {bound:g} ms p99 bound ({source}) and the accuracy gate")
    if best["source"] in ("ort", "ort-e2e", "ort-cudagraph") and best["batch"] > 1:
        text += (" (a closed-loop figure: the batch is assembled before the clock starts, so the wait for "
                 "requests to fill it is not included; LoadGen's Server scenario measures that)")
    if runner is not None:
        text += f"; runner-up {runner['name']} ({runner['throughput']:,.0f} images/s, p99 {_p99(runner)})"
    return text

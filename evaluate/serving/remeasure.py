"""Re-measuring the recommendation's finalists: interleaved, with more calls, until their figures are stable.

A latency figure flagged UNSTABLE (evaluate/latency.py: p90/p50 or std/mean too large) is never ranked as it
stands. The finalists are timed again in rounds — a few calls of each in turn, round after round — so a slow
spell of the machine falls on all of them alike instead of on whichever was being timed; their per-call times
accumulate until every one is stable (or the rounds run out, which the recommendation then says).

When is a re-measured figure fit to rank? The ranking statistic is the median, so what must hold is what the median
depends on: the median pinned down — its 95 % order-statistic interval within ±``SETTLED_HALF_WIDTH`` of it (a
bimodal figure whose median could fall in either mode has a wide interval and stays unranked). latency.py's flags,
p90/p50 and std/mean, measure the tail: calls preempted for milliseconds on a busy machine (a 10 ms stall among
0.03 ms calls puts std/mean far above 0.5 however many calls are added). The tail moves the mean and the p99, which
the bound check judges from the p99's own interval, not the median. A re-measured figure with a settled median is
ranked; latency.py's flag is kept in ``unstable_note`` and the recommendation names the figures re-measured.

``interleaved`` is the timing loop over plain callables (unit-tested with a fake clock-free source);
``session_remeasurer`` builds the callables of an evaluation's ONNX Runtime sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convkit.evaluate import latency as lat


SETTLED_HALF_WIDTH = 0.05


def unsettled(stats: dict) -> str | None:
    """Return why a re-measured figure (latency.summarize's statistics) cannot be ranked on its median, else None:
    no interval of the p50, or that interval wider than ±SETTLED_HALF_WIDTH of it."""
    p50 = stats["p50_ms"]
    ci = stats.get("p50_ci_ms")
    if not ci:
        return "too few calls for an interval of the p50"
    half = max(p50 - ci[0], ci[1] - p50) / p50 if p50 > 0 else float("inf")
    if half > SETTLED_HALF_WIDTH:
        return f"p50 95 % interval [{ci[0]:.3g}, {ci[1]:.3g}] ms is wider than ±{SETTLED_HALF_WIDTH:.0%}"
    return None


@dataclass(frozen=True)
class Rounds:
    """How hard to try: at least ``min_rounds``, at most ``max_rounds``; each round times every finalist for at
    least ``calls`` calls and ``seconds`` seconds."""

    min_rounds: int = 3
    max_rounds: int = 12
    calls: int = 20
    seconds: float = 0.15


def remeasure_rounds(opts) -> Rounds:
    """Return the re-measurement's effort for EvalOptions ``opts``: each round's seconds per finalist follow the
    timing asked for (a quarter of ``--min-seconds``, between 0.05 and 0.15 s), so a quick evaluation re-measures
    quickly yet with enough calls to settle a median."""
    return Rounds(seconds=min(Rounds.seconds, max(0.05, opts.timing.min_seconds / 4)))


def interleaved(calls: dict, rounds: Rounds = Rounds(), clock: Callable[[], float] = time.perf_counter) -> dict:
    """Return {key: latency statistics (latency.summarize) plus ``rounds``} for ``calls``: {key: (call, sync,
    batch)}, timed in interleaved rounds until every figure is settled (after ``min_rounds``) or ``max_rounds``.
    ``unstable`` is then ``unsettled``'s reason (None when rankable) and ``unstable_note`` latency.py's flag."""
    times: dict = {k: [] for k in calls}
    stats: dict = {}
    for done in range(1, rounds.max_rounds + 1):
        for key, (call, sync, _) in calls.items():
            sync = sync or (lambda: None)
            start, before = clock(), len(times[key])
            while len(times[key]) - before < rounds.calls or clock() - start < rounds.seconds:
                t = clock()
                call()
                sync()
                times[key].append(clock() - t)
        stats = {k: _settled(lat.summarize(np.asarray(v) * 1e3, calls[k][2], float("nan")), done)
                 for k, v in times.items()}
        if done >= rounds.min_rounds and not any(s["unstable"] for s in stats.values()):
            break
    return stats


def _settled(stats: dict, done: int) -> dict:
    return {**stats, "unstable": unsettled(stats), "unstable_note": stats["unstable"], "rounds": done}


def session_remeasurer(specs: dict, configs: dict, images_u8, device_id: int = 0, rounds: Rounds = Rounds()):
    """Return remeasure(candidates) → {candidate name: statistics} for latency-table candidates of an evaluation:
    ``specs`` (precision → ModelSpec), ``configs`` (provider → ProviderConfig), the test images. A fresh session
    per (precision, provider); host arrays on CPU and for ``ort-e2e``, IO binding for ``ort`` on a GPU."""
    from convkit.providers import make_session

    def remeasure(candidates: list[dict]) -> dict:
        sessions, calls = {}, {}
        for c in candidates:
            spec, kind = specs.get(c["precision"]), c["provider"]
            if spec is None or kind not in configs or c.get("source") not in ("ort", "ort-e2e"):
                continue
            key = (c["precision"], kind)
            if key not in sessions:
                sessions[key] = make_session(str(spec.path), configs[kind])
            x = spec.prepare(lat.make_batch(images_u8, c["batch"]))
            calls[c["name"]] = _call(sessions[key], spec, x, kind, c["source"], device_id) + (c["batch"],)
        return interleaved(calls, rounds) if calls else {}

    return remeasure


def _call(session, spec, x, kind: str, source: str, device_id: int):
    """Return (call, sync) timing one inference as the latency table timed that row."""
    if kind == "cpu" or source == "ort-e2e":
        feed, names = {spec.input_name: x}, [spec.output_name]
        sync = None
        if kind != "cpu":
            import torch

            sync = torch.cuda.synchronize
        return (lambda: session.run(names, feed)), sync
    return lat.ort_device_call(session, spec, x, device_id)

"""Re-measuring the recommendation's finalists: interleaved, with more calls, until their figures are stable.

A latency figure flagged UNSTABLE (evaluate/latency.py: p90/p50 or std/mean too large) is never ranked as it
stands. The finalists are timed again in rounds — a few calls of each in turn, round after round — so a slow
spell of the machine falls on all of them alike instead of on whichever was being timed; their per-call times
accumulate until every one is stable (or the rounds run out, which the recommendation then says).

``interleaved`` is the timing loop over plain callables (unit-tested with a fake clock-free source);
``session_remeasurer`` builds the callables of an evaluation's ONNX Runtime sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convkit.evaluate import latency as lat


@dataclass(frozen=True)
class Rounds:
    """How hard to try: at least ``min_rounds``, at most ``max_rounds``; each round times every finalist for at
    least ``calls`` calls and ``seconds`` seconds."""

    min_rounds: int = 3
    max_rounds: int = 12
    calls: int = 20
    seconds: float = 0.15


def interleaved(calls: dict, rounds: Rounds = Rounds(), clock: Callable[[], float] = time.perf_counter) -> dict:
    """Return {key: latency statistics (latency.summarize) plus ``rounds``} for ``calls``: {key: (call, sync,
    batch)}, timed in interleaved rounds until every figure is stable (after ``min_rounds``) or ``max_rounds``."""
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
        stats = {k: {**lat.summarize(np.asarray(v) * 1e3, calls[k][2], float("nan")), "rounds": done}
                 for k, v in times.items()}
        if done >= rounds.min_rounds and not any(s["unstable"] for s in stats.values()):
            break
    return stats


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

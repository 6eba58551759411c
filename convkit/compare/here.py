"""Two ONNX files compared here: both prepared by the evaluation's own code (evaluate/run.prepare: the same data,
preprocessing and provider rules as `convkit evaluate`), run on the same chunks of images — each chunk decoded
once and fed to both, one after the other — and timed in an interleaved latency A/B."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.compare import latency_ab
from convkit.compare.inputs import Side
from convkit.errors import EXIT_UNVERIFIED, ConvkitError
from convkit.evaluate import accuracy as acc
from convkit.evaluate import predictions as pred_file
from convkit.evaluate.latency import make_batch
from convkit.evaluate.options import EvalOptions


def evaluate_pair(base: Path, new: Path, opts: EvalOptions, ab: latency_ab.AbTiming | None
                  ) -> tuple[Side, Side, dict | None]:
    """Return (base Side, new Side, the latency A/B's raw times {"base_ms", "new_ms"} or None without ``ab``).

    Both files are evaluated on the first provider of ``opts`` on the same images; ConvkitError (exit 2) when
    they resolve to different data (e.g. two run folders trained on different splits)."""
    from convkit.evaluate.run import prepare
    from convkit.evaluate.target import resolve_target
    from convkit.providers import make_session

    setups = [prepare(resolve_target(Path(p), None), opts) for p in (base, new)]
    a, b = setups
    if a.data.checksum != b.data.checksum:
        raise ConvkitError(f"{base} and {new} resolve to different data ({a.data.name} vs {b.data.name}); pass "
                           f"--data or --dataset")
    provider = a.providers[0]
    sessions = [make_session(str(s.primary[1].path), s.configs[provider]) for s in setups]
    specs = [s.primary[1] for s in setups]
    scores = paired_scores(sessions, specs, a.data.images, opts.data.eval_batch)
    for path, spec, s in zip((base, new), specs, scores):
        why = acc.degenerate_reason(s, a.data.labels, spec.output_name)
        if why:
            raise ConvkitError(f"{path}: outputs degenerate ({why}): nothing to compare", EXIT_UNVERIFIED)
    sides = []
    for path, setup, spec, s in zip((base, new), setups, specs, scores):
        dataset = {"name": spec.dataset, **setup.data.reading}
        entry = [{"precision": setup.primary[0], "provider": provider, "top_k": pred_file.top_k(s)}]
        preds = pred_file.from_evaluation(setup.data, spec.class_names,
                                          pred_file.preprocessing_record(spec.describe(), dataset), entry, "",
                                          spec.dataset)
        sides.append(Side(str(path), preds, None, setup.data.images, f"{setup.primary[0]}/{provider}",
                          notes=setup.notes))
    times = None
    if ab is not None:
        times = latency_pair(sessions, specs, a.data.images, ab)
    return sides[0], sides[1], times


def paired_scores(sessions, specs, images, batch: int) -> list[np.ndarray]:
    """Return both models' score rows for ``images``: each chunk read once (a folder decodes it once) and run
    through both sessions before the next, so neither model sees other pixels or another machine state."""
    outs: list[list[np.ndarray]] = [[], []]
    step = max(batch, 1)
    for start in range(0, len(images), step):
        chunk = np.asarray(images[start:start + step])
        for out, session, spec in zip(outs, sessions, specs):
            out.append(acc.ort_scores(session, spec, chunk, batch))
    return [np.concatenate(o) for o in outs]


def latency_pair(sessions, specs, images, ab: latency_ab.AbTiming) -> dict:
    """Return the batch-1 per-call times (ms, [blocks, calls]) of both sessions, timed in interleaved blocks on the
    same real test image."""
    fns = []
    for session, spec in zip(sessions, specs):
        feed = {spec.input_name: spec.prepare(make_batch(images, spec.fixed_batch or 1))}
        names = [spec.output_name]
        fns.append(lambda s=session, f=feed, n=names: s.run(n, f))
    base_ms, new_ms = latency_ab.interleaved(fns[0], fns[1], ab)
    return {"base_ms": base_ms, "new_ms": new_ms}

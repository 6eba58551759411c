"""Whether a file's figures agree with the records inside it that they were derived from.

convkit.provenance checks each file against the file it was derived from (hashes, the checkpoint's own record).
This module checks each file against itself, so a hand-edited figure is caught even where no other file records
it:

- every ``<key>`` with a ``<key>_ci`` interval lies inside that interval;
- an accuracy entry (eval.json's ``accuracy`` and ``pytorch``; metrics.json's ``test_acc``) is a whole number of
  its ``n`` images, its interval is the 95 % Wilson interval of that count, and its confusion matrix (when whole)
  has that many right on the diagonal;
- the ``summary`` block a reader shows is what the stage derives from the file's per-precision records (eval.json:
  convkit.evaluate.run.summary_fields; export.json: convkit.export.pipeline.summary_fields) or the top-level
  figures (metrics.json);
- eval.json's ``robustness`` rows are counts of its images and agree with their change against clean data, and
  its summary is what convkit.evaluate.robustness.summarize derives from them.

Each function returns one short "what differs" text per problem; [] when the file is consistent.
"""

from __future__ import annotations

import math

from convkit.uncertainty import wilson

TOL = 1e-9


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _same(a, b) -> bool:
    if _num(a) is not None and _num(b) is not None:
        return math.isclose(float(a), float(b), rel_tol=TOL, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _interval(v) -> tuple[float, float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
        return float(v[0]), float(v[1])
    return None


def interval_problems(figures: dict, where: str) -> list[str]:
    """Return a problem for each ``key`` of ``figures`` whose value lies outside its own ``key_ci`` interval."""
    out = []
    for key, value in figures.items():
        ci = _interval(figures.get(f"{key}_ci"))
        if ci is not None and _num(value) is not None and not ci[0] - TOL <= value <= ci[1] + TOL:
            out.append(f"{where}{key} {value:g} lies outside its own interval [{ci[0]:.4f}, {ci[1]:.4f}]")
    return out


def proportion_problems(value, n, ci, what: str) -> list[str]:
    """Return problems of a share ``value`` of ``n`` images: not a whole count, or ``ci`` not its Wilson interval."""
    value, n = _num(value), _num(n)
    if value is None or n is None or n <= 0 or n != int(n):
        return []
    count = round(value * n)
    if abs(count / n - value) > TOL:
        return [f"{what} {value:g} is not a whole number of its {int(n)} images"]
    expected = wilson(count, int(n))
    if ci is not None and expected is not None and not _same(list(ci) if isinstance(ci, (list, tuple)) else ci,
                                                             expected.to_list()):
        return [f"{what}'s interval {ci} is not the 95 % Wilson interval of {count}/{int(n)}"]
    return []


def accuracy_entry_problems(entry: dict, what: str) -> list[str]:
    """Return the problems of one accuracy record (eval.json's ``accuracy`` entries and ``pytorch``)."""
    if not isinstance(entry, dict):
        return []
    n = entry.get("n")
    out = proportion_problems(entry.get("accuracy"), n, entry.get("accuracy_ci"), f"{what} accuracy")
    out += proportion_problems(entry.get("top5_accuracy"), n, entry.get("top5_accuracy_ci"), f"{what} top-5 accuracy")
    cm = entry.get("confusion")
    if (_num(entry.get("accuracy")) is not None and isinstance(cm, list) and cm
            and all(isinstance(r, list) and len(r) == len(cm) for r in cm)
            and all(_num(c) is not None for r in cm for c in r)):
        total, right = sum(sum(r) for r in cm), sum(cm[i][i] for i in range(len(cm)))
        if total == n and not _same(right / total, entry["accuracy"]):  # a matrix of every image: it must agree
            out.append(f"{what} accuracy {entry['accuracy']:g} differs from its confusion matrix's {right}/{total}")
    return out


def summary_problems(summary, derived: dict, where: str) -> list[str]:
    """Return a problem for each figure of ``summary`` that differs from (or is missing in) ``derived``."""
    if not isinstance(summary, dict):
        return [f"{where}is not a table of figures"] if summary is not None else []
    keys = list(dict.fromkeys([*summary, *derived]))
    return [f"{where}{k} {summary.get(k)!r} (its records give {derived.get(k)!r})"
            for k in keys if not _same(summary.get(k), derived.get(k))]


def eval_problems(doc: dict) -> list[str]:
    """Return the problems of an eval.json document: its accuracy records, and its summary block against them."""
    entries = [e for e in doc.get("accuracy") or [] if isinstance(e, dict)]
    out = [p for e in entries for p in accuracy_entry_problems(e, f"{e.get('precision')}/{e.get('provider')}")]
    out += accuracy_entry_problems(doc.get("pytorch"), "PyTorch")
    summary = doc.get("summary")
    out += interval_problems(summary if isinstance(summary, dict) else {}, "summary.")
    if summary is not None:
        derived = _derived_eval_summary(doc)
        out += summary_problems(summary, derived, "summary.") if derived is not None else []
    return out + robustness_problems(doc.get("robustness"))


def robustness_problems(doc) -> list[str]:
    """Return the problems of eval.json's ``robustness``: each row's accuracy a whole number of the ``n`` images
    and its change against the clean figure, and the summary (mean corrupted top-1, int8 − fp32 gaps) against
    what convkit.evaluate.robustness.summarize derives from the rows."""
    from dataclasses import fields

    from convkit.evaluate.robustness import CorruptionRow, RobustnessResult, summarize  # see _derived_eval_summary

    if not isinstance(doc, dict):
        return []
    try:
        rows = [CorruptionRow(**r) for r in doc.get("rows") or []]
        res = RobustnessResult(**{**{f.name: doc[f.name] for f in fields(RobustnessResult)}, "rows": rows})
        derived = summarize(res)
    except (KeyError, TypeError, ValueError, AttributeError):
        return ["robustness: its rows are unreadable"]
    out = []
    for r in rows:
        what = f"robustness {r.corruption}/{r.severity} {r.backend}/{r.precision}/{r.provider}"
        out += proportion_problems(r.accuracy, doc.get("n"), None, f"{what} accuracy")
        base = res.clean.get(f"{r.backend}/{r.precision}/{r.provider}") if isinstance(res.clean, dict) else None
        if _num(base) is not None and _num(r.accuracy) is not None and not _same(r.delta_vs_clean, r.accuracy - base):
            out.append(f"{what} change {r.delta_vs_clean!r} (its records give {r.accuracy - base!r})")
    if "summary" in doc and not _same(doc["summary"], derived):
        out.append("robustness.summary differs from what its rows give")
    return out


def _derived_eval_summary(doc: dict) -> dict | None:
    """Return the summary block evaluate would write from ``doc``'s records, None when they are not readable."""
    from convkit.evaluate.run import summary_fields  # imported here: the evaluation stage imports provenance

    variants, providers = doc.get("variants"), (doc.get("providers") or {}).get("used")
    if not isinstance(variants, dict) or not variants or not isinstance(providers, list) or not providers:
        return None
    try:
        out = summary_fields([e for e in doc.get("accuracy") or [] if isinstance(e, dict)], doc.get("pytorch"),
                             [r for r in doc.get("latency") or [] if isinstance(r, dict)], next(iter(variants)),
                             providers[0])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    verdict = (doc.get("preprocessing") or {}).get("verdict") if isinstance(doc.get("preprocessing"), dict) else None
    if verdict not in (None, "stated"):
        out["preprocessing"] = verdict
    geometry = (doc.get("dataset") or {}).get("geometry") if isinstance(doc.get("dataset"), dict) else None
    if geometry is not None:  # a folder's reading (evaluate's assemble): the geometry behind the number
        out["geometry"] = geometry
    return out


def metrics_problems(doc: dict) -> list[str]:
    """Return the problems of a metrics.json document: its test accuracy and interval, its summary block against
    its top-level figures (which convkit.provenance checks against the checkpoint)."""
    out = proportion_problems(doc.get("test_acc"), doc.get("test_images"), doc.get("test_acc_ci"), "test_acc")
    summary = doc.get("summary")
    if isinstance(summary, dict):
        out += interval_problems(summary, "summary.")
        out += [f"summary.{k} {v!r} (the file's {k}: {doc.get(k)!r})" for k, v in summary.items()
                if not _same(v, doc.get(k))]
    elif summary is not None:
        out.append("summary is not a table of figures")
    return out


def export_problems(doc: dict) -> list[str]:
    """Return the problems of an export.json document: its summary block against its per-precision records."""
    from convkit.export.pipeline import summary_fields  # imported here: export imports the checkpoint readers

    summary = doc.get("summary")
    if summary is None:
        return []
    try:
        derived = summary_fields(doc)
    except (KeyError, TypeError, ValueError, AttributeError):
        return ["its per-precision records are unreadable"]
    return summary_problems(summary, derived, "summary.")

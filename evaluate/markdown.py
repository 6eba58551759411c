"""Human-readable outputs of an evaluation: eval.md tables, the latency plot and confusion-matrix PNG/CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit import class_drops
from convkit.artifacts import EvalNames
from convkit.atomic import write_csv, write_text
from convkit.evaluate import robustness
from convkit.evaluate.latency import UNSTABLE_P90_OVER_P50, UNSTABLE_STD_OVER_MEAN
from convkit.evaluate.result import EvalResult
from convkit.evaluate.serving import section as serving_section
from convkit.gates import PRECISIONS
from convkit.text import cap, md_code, md_text
from convkit.uncertainty import format_interval, format_paired

# Above this many classes a confusion-matrix PNG is unreadable: eval.md lists the most confused pairs instead.
MAX_CONFUSION_PNG_CLASSES = 50


def write_confusion_csv(path: Path, metrics: dict, class_names: list[str]) -> Path:
    """Atomically write the confusion matrix as CSV (counts, then row-normalized); returns ``path``."""
    rows = []
    for kind, mat in (("count", metrics["confusion"]), ("row_normalized", metrics["confusion_normalized"])):
        for i, row in enumerate(mat):
            rows.append({"kind": kind, "true": class_names[i], **{f"pred_{c}": v for c, v in zip(class_names, row)}})
    return write_csv(path, rows)


def write_confusion_png(path: Path, metrics: dict, class_names: list[str], title: str) -> Path:
    """Atomically write a row-normalized confusion heatmap with counts and class names on both axes."""
    from convkit import plotting  # matplotlib loads when a figure is drawn

    cm = np.asarray(metrics["confusion"])
    norm = np.asarray(metrics["confusion_normalized"])
    k = len(class_names)
    size = max(5.0, 0.55 * k + 2.5)
    fig = plotting.new_figure(size + 1, size)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [cap(c, 40) for c in class_names]  # foreign names: one line, bounded
    ax.set_xticks(range(k), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return plotting.save(fig, Path(path), dpi=110)


def write_latency_png(path: Path, rows: list[dict], title: str) -> Path | None:
    """Atomically write p50 latency vs batch size (log-log), one line per precision/provider/backend; None if no rows."""
    if not rows:
        return None
    from convkit import plotting  # matplotlib loads when a figure is drawn

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        series.setdefault(f"{r['precision']} {r['provider']} {r['backend']}", []).append((r["batch"], r["p50_ms"]))
    fig = plotting.new_figure(8, 5)
    ax = fig.add_subplot()
    for label, pts in sorted(series.items()):
        pts.sort()
        ls = "--" if "torch" in label else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return plotting.save(fig, Path(path), dpi=110)


def _f(v, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def _delta_words(test: dict | None) -> str:
    """Return, for a gate verdict, whether its delta is distinguishable from zero by the delta's McNemar test
    ("" without one)."""
    if not test:
        return ""
    return ", Δ distinguishable from 0" if test["distinguishable"] else ", Δ not distinguishable from 0"


def _acc_cells(metrics: dict) -> str:
    """Return the accuracy, top-5 and ECE cells, each with its 95 % interval."""
    cal = metrics.get("calibration") or {}
    return (f"{format_interval(metrics.get('accuracy'), metrics.get('accuracy_ci'))} | "
            f"{format_interval(metrics.get('top5_accuracy'), metrics.get('top5_accuracy_ci'))} | "
            f"{format_interval(cal.get('ece'), cal.get('ece_ci'))}")


def markdown(result: EvalResult) -> str:
    """Return eval.md: model, accuracy vs PyTorch, per-class metrics, latency with ratios, method and hardware."""
    m = result.model
    lines = [f"# Evaluation of {md_code(Path(m['path']).name)}", ""] + headline_lines(result)
    ds = result.dataset
    lines += [f"- dataset: **{md_text(ds.get('label', ds['name']))}** {ds['split']} split, {ds['n']} images "
              f"({md_text(ds['source'], 400)})",
              f"- input {md_code(m['input'])} ({m['input_type']}, {m['layout']}, batch "
              f"{m['fixed_batch'] or 'dynamic'}), output {md_code(m['output'])}; range 0..{m['input_range']}, "
              f"mean {m['mean']}, std {m['std']} "
              f"({md_text(', '.join(f'{k}: {v}' for k, v in m['sources'].items()), 1000)})",
              f"- providers: {', '.join(result.providers['used'])}"]
    for note in result.notes:
        lines.append(f"- note: {md_text(note, 1000)}")
    lines.append("")
    lines += preprocessing_lines(result.preprocessing)
    lines += accuracy_lines(result)
    if result.accuracy:
        lines += per_class_lines(result.accuracy[0])
        lines += class_drops.markdown_lines(result.accuracy)
    lines += robustness.markdown_lines(result.robustness)
    lines += latency_lines(result.latency, result.method.get("input_shape_timed"))
    lines += serving_section.markdown_lines(result)
    lines += method_lines(result)
    return "\n".join(lines) + "\n"


def accuracy_lines(result: EvalResult) -> list[str]:
    """Return eval.md's accuracy table: PyTorch's row, then one row per ORT file and provider with its gate, each
    accuracy with its 95 % interval and each delta with its paired test."""
    lines = ["## Accuracy", "", "Intervals: 95 % (Wilson for accuracies and recalls, seeded bootstrap for ECE); a "
             "delta is McNemar's exact test on the same images with the 95 % interval of the difference — "
             "\"real\" only when the test rejects equal accuracy (p < 0.05).", "",
             "| precision | backend | accuracy | top-5 | ECE | loss | macro F1 | Δacc vs PyTorch | "
             "Δacc vs fp32 | predictions differing | gate |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    pt = result.pytorch
    if pt:
        lines.append(f"| fp32 | PyTorch eager ({pt['device']}) | {_acc_cells(pt)} | {_f(pt['loss'])} | "
                     f"{_f(pt['macro_f1'])} | | | | |")
    for acc in result.accuracy:
        vs = acc.get("vs_pytorch")
        gate = acc.get("gate")
        gate_s = "—" if not gate else (f"{'pass' if gate['passed'] else '**FAIL**'} (max drop {gate['max_drop_points']}"
                                       f"{_delta_words((vs or {}).get('paired_test'))})")
        lines.append(f"| {acc['precision']} | ORT {acc['provider']} | {_acc_cells(acc)} | {_f(acc['loss'])} | "
                     f"{_f(acc['macro_f1'])} | {format_paired(vs.get('paired_test')) if vs else '—'} | "
                     f"{format_paired(acc.get('vs_fp32'))} | {vs['disagreements'] if vs else '—'} | {gate_s} |")
    lines.append("")
    return lines


def per_class_lines(first: dict) -> list[str]:
    """Return eval.md's per-class table of the first accuracy entry (recall with its 95 % interval), its most
    confused pairs when there are too many classes for a confusion PNG, and the images whose class differs from
    PyTorch's."""
    lines = [f"Loss: {first['loss_kind']} (model outputs {first['output_kind']}).", "",
             f"### Per class ({first['precision']}, ORT {first['provider']})", "",
             "| class | precision | recall [95 %] | F1 | support |", "|---|---|---|---|---|"]
    for c in first["per_class"]:
        lines.append(f"| {md_text(c['class'])} | {c['precision']:.4f} | "
                     f"{format_interval(c['recall'], c.get('recall_ci'))} | {c['f1']:.4f} | {c['support']} |")
    lines.append("")
    if len(first["per_class"]) > MAX_CONFUSION_PNG_CLASSES and first.get("confused_pairs"):
        lines += [f"### Most confused pairs ({len(first['per_class'])} classes: no confusion PNG)", "",
                  "| true | predicted | images | share of true class |", "|---|---|---|---|"]
        lines += [f"| {md_text(p['true'])} | {md_text(p['predicted'])} | {p['count']} | {p['share_of_true']:.3f} |"
                  for p in first["confused_pairs"]]
        lines.append("")
    if first.get("vs_pytorch") and first["vs_pytorch"]["disagreements"]:
        idx = first["vs_pytorch"]["disagreement_indices"]
        lines += [f"Test images whose predicted class differs from PyTorch ({len(idx)} listed): "
                  f"{', '.join(map(str, idx[:50]))}{' …' if len(idx) > 50 else ''}", ""]
    return lines


def method_lines(result: EvalResult) -> list[str]:
    """Return eval.md's Method, Hardware and software, and Provider options sections."""
    lines = ["## Method", ""]
    lines += [f"- {k}: {v}" for k, v in result.method.items()]
    lines += ["", "## Hardware and software", ""]
    lines += [f"- {k}: {v}" for k, v in result.hardware.items()]
    lines += ["", "## Provider options", ""]
    lines += [f"- {k}: `{v}`" for k, v in result.providers["options"].items()]
    return lines


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def headline_lines(result: EvalResult) -> list[str]:
    """Return eval.md's opening: the model's identity, then one line per precision and provider (accuracy,
    batch-1 p50, best images/s, file size, parameters), then links to the figures."""
    m, ds = result.model, result.dataset
    meta = m.get("metadata", {})
    lines = [f"**{md_text(meta.get('experiment') or Path(m['path']).name)}** on "
             f"**{md_text(ds.get('label', ds['name']))}** "
             f"({ds['n']} images)", ""]
    params = result.parameters
    for prec, v in result.variants.items():
        lines.append(f"- {md_code(Path(v['path']).name)} ({prec}): sha256 {md_code(v.get('sha256', '?'))}")
    lines.append("")
    lines += _geometry_lines(result)
    lines += _trust_lines(result)
    for a in result.accuracy:
        if a.get("degenerate"):
            lines.append(f"- **{a['precision']} on ORT {a['provider']}**: OUTPUTS DEGENERATE ({a['degenerate']}): no "
                         f"accuracy reported")
            continue
        ort = [r for r in result.latency if r["backend"] == "ort" and r["precision"] == a["precision"]
               and r["provider"] == a["provider"]]
        b1 = next((r for r in ort if r["batch"] == 1), None)
        ips = max((r for r in ort if r["images_per_s"]), key=lambda r: r["images_per_s"], default=None)
        var = result.variants.get(a["precision"], {})
        top5 = (f" (top-5 {format_interval(a['top5_accuracy'], a.get('top5_accuracy_ci'))})"
                if a.get("top5_accuracy") is not None else "")
        lat = (f"batch-1 p50 {_p50(b1)} ms{' (UNSTABLE)' if b1.get('unstable') else ''}" if b1 else
               "batch-1 p50 —")
        best = (f"best {ips['images_per_s']:,.0f} images/s (batch {ips['batch']}, mean-based)"
                f"{' (UNSTABLE)' if ips.get('unstable') else ''}" if ips else "images/s —")
        lines.append(f"- **{a['precision']} on ORT {a['provider']}**: accuracy "
                     f"{format_interval(a['accuracy'], a.get('accuracy_ci'))}{top5}, {lat}, "
                     f"{best}, file {_size(var.get('size_bytes'))}, "
                     f"{f'{params:,} parameters' if params else 'parameters unknown'}")
    links = [f"[{Path(f).name}]({Path(f).name})" for k, f in sorted(result.files.items())
             if str(f).endswith(".png")]
    if links:
        lines += ["", "Figures: " + ", ".join(links)]
    return lines + [""]


def _geometry_lines(result: EvalResult) -> list[str]:
    """Return the head's statement of the preprocessing behind every number: geometry (for images read from a
    folder) and pixels, each with its source."""
    pre = result.preprocessing or {}
    used = pre.get("used") or result.model.get("preprocessing")
    return [f"- preprocessing: {md_text(used, 1000)}", ""] if used else []


def _trust_lines(result: EvalResult) -> list[str]:
    """Return the loud lines that say a headline number cannot be stood behind (unverified preprocessing)."""
    pre = result.preprocessing or {}
    found = pre.get("probe") or {}
    if pre.get("verdict") != "unverified" or not found.get("better"):
        return []
    b, cur = found["better"], found["current"]
    return [f"- **PREPROCESSING UNVERIFIED**: `{b['flags']}` gives {b['accuracy']:.2f}, the preprocessing used "
            f"{cur['accuracy']:.2f} on the same {found['images']} images (exact McNemar p = {b['p_value']:.2g}); "
            f"the accuracies below are measured with the defaulted values", ""]


def preprocessing_lines(pre: dict | None) -> list[str]:
    """Return eval.md's Preprocessing section: the values used and their sources, warnings, the probe's table."""
    if not pre:
        return []
    lines = ["## Preprocessing", "", f"Used: {md_text(pre['used'], 1000)}", ""]
    lines += [f"- **WARNING**: {md_text(w, 1000)}" for w in pre["warnings"]]
    lines += [f"- {md_text(n, 1000)}" for n in pre.get("notes", [])]
    found = pre.get("probe")
    if found:
        lines += ["", f"Probe: top-1 accuracy of the usual conventions on {found['images']} test images "
                  f"(seed {found['seed']}), best first; {found.get('test', '')}.", "",
                  "| flags | accuracy | only this right | only the used right | p |", "|---|---|---|---|---|"]
        lines += [f"| `{c['flags'] or 'as used'}` | {c['accuracy']:.3f} | {c.get('only_this_right', '—')} | "
                  f"{c.get('only_current_right', '—')} | {c.get('p_value', float('nan')):.2g} |"
                  for c in found["candidates"]]
    return lines + [""]


def _ratio(r: dict, mode: str) -> str:
    if r.get(f"ratio_to_pytorch_{mode}_note"):
        return "— (unstable)"
    ratio = r.get(f"ratio_to_pytorch_{mode}")
    verdict = r.get(f"ratio_to_pytorch_{mode}_verdict")
    return format_interval(ratio, r.get(f"ratio_to_pytorch_{mode}_ci"), ".2f") + (f" ({verdict})" if verdict else "")


def _p50(row: dict) -> str:
    """Return the p50 cell with its 95 % interval, or saying there is none (too few timed calls)."""
    if row.get("p50_ci_ms") is None and row.get("p50_ms") is not None:
        return f"{row['p50_ms']:.3f} (no interval: {row.get('n')} calls)"
    return format_interval(row.get("p50_ms"), row.get("p50_ci_ms"), ".3f")


def latency_lines(rows: list[dict], shape: str | None = None) -> list[str]:
    """Return the Latency section of eval.md (empty without rows): one table row per figure, unstable ones flagged;
    ``shape``: the input shape every figure was timed at."""
    if not rows:
        return []
    lines = ["## Latency", "", *([f"Every figure was timed on input {shape}.", ""] if shape else []), "p50/p90/p99 per batch in ms; images/s = batch ÷ mean latency; ratio = ORT p50 ÷ "
             "PyTorch p50 at the same batch and device (< 1: ORT faster), not formed when either figure is unstable "
             f"(p90/p50 > {UNSTABLE_P90_OVER_P50:g} or std/mean > {UNSTABLE_STD_OVER_MEAN:g}). p50 [95 %]: "
             "order-statistic interval of the median over the timed calls; a ratio's interval is that of the two "
             "medians' 97.5 % intervals (at least 95 %), and it says faster/slower only when the interval excludes 1, "
             "else tie.", "",
             "| precision | provider | backend | batch | first run | p50 [95 %] | p90 | p99 | mean ± std | min | images/s | "
             "stable | PyTorch eager p50 | ratio | PyTorch compile p50 | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stable = f"**UNSTABLE** ({r['unstable']})" if r.get("unstable") else "yes"
        lines.append(
            f"| {r['precision']} | {r['provider']} | {r['backend']} | {r['batch']} | {_f(r['first_run_ms'], '.2f')} | "
            f"{_p50(r)} | {_f(r['p90_ms'], '.3f')} | {_f(r['p99_ms'], '.3f')} | "
            f"{r['mean_ms']:.3f} ± {r['std_ms']:.3f} | {_f(r['min_ms'], '.3f')} | {_f(r['images_per_s'], ',.0f')} | "
            f"{stable} | {_f(r.get('pytorch_eager_p50_ms'), '.3f')} | {_ratio(r, 'eager')} | "
            f"{_f(r.get('pytorch_compile_p50_ms'), '.3f')} | {_ratio(r, 'compile')} |")
    lines += ["", "Backends: `ort` = session.run on host arrays (CPU) or IO binding with input and output on the GPU; "
              "`ort-e2e` = session.run from host numpy to host numpy, including host↔device copies; "
              "`ort-cudagraph` = IO binding replaying a captured CUDA graph (one session per static batch size); "
              "`torch-eager` / `torch-compile` = the run's PyTorch module on the same inputs.", ""]
    return lines


def write_markdown(path: Path, result: EvalResult) -> Path:
    """Atomically write eval.md for ``result``; returns ``path``."""
    return write_text(path, markdown(result))


def model_name(result: EvalResult) -> str:
    """Return the experiment a result's model was exported from, else its file name."""
    return cap(result.model.get("metadata", {}).get("experiment") or Path(result.model["path"]).name, 80)


def n_images(result: EvalResult, acc: dict) -> str:
    """Return "<n> <dataset label> test images", the label saying e.g. that CIFAR-10 is its JPEG copy."""
    label = result.dataset.get("label") or result.dataset.get("name", "")
    return f"{acc['n']:,} {label} test images"


def write_figures(out: Path, names: EvalNames, result: EvalResult, class_names: list[str]) -> dict:
    """Write one confusion CSV/PNG per precision (from its first provider) and the latency PNG into ``out``.

    Returns {file key: path}. Confusion files of precisions this result does not hold are removed, so the
    folder never shows figures eval.md does not describe.
    """
    files, done = {}, []
    for acc in result.accuracy:
        if acc["precision"] in done:
            continue
        suffix = "" if not done else f".{acc['precision']}"
        done.append(acc["precision"])
        title = (f"{model_name(result)} ({acc['precision']}) — ORT "
                 f"{acc['provider']}, acc {acc['accuracy']:.4f} on {n_images(result, acc)}")
        classes = acc.get("confusion_classes") or []  # the matrix's rows: every class, or those present
        if acc.get("confusion") is not None:
            csv = write_confusion_csv(out / names.confusion(suffix, "csv"), acc, classes)
            files[f"confusion_csv{suffix}"] = str(csv)
        elif (out / names.confusion(suffix, "csv")).is_file():  # no matrix at this many classes: none stale
            (out / names.confusion(suffix, "csv")).unlink()
        png = out / names.confusion(suffix, "png")
        if acc.get("confusion") is not None and len(classes) <= MAX_CONFUSION_PNG_CLASSES:
            files[f"confusion_png{suffix}"] = str(write_confusion_png(png, acc, classes, title))
        elif png.is_file():  # unreadable at this many classes: eval.md lists the most confused pairs instead
            png.unlink()
    kept = {Path(f).name for f in files.values()}
    for precision in PRECISIONS:
        for ext in ("csv", "png"):
            stale = out / names.confusion(f".{precision}", ext)
            if stale.name not in kept and stale.is_file():
                stale.unlink()
    png = write_latency_png(out / names.latency_png, result.latency,
                            f"{model_name(result)}: p50 latency vs batch size")
    if png:
        files["latency_png"] = str(png)
    elif (out / names.latency_png).is_file():
        (out / names.latency_png).unlink()
    return files

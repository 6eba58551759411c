"""Build the report of a suite folder: figures in <suite>/report/, then report.md and report.html beside them."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch.nn as nn

from convkit import artifacts as A
from convkit import data_freshness
from convkit.atomic import ensure_writable_dir, write_text
from convkit.data.catalog import display_name
from convkit.errors import ConvkitError, one_line
from convkit.models import create_model, get_model_config
from convkit.plotting import plot_style
from convkit.report import figures as F
from convkit.report import robustness
from convkit.report import comparison
from convkit.report.collect import EVAL_JSON, NOT_MEASURED, RunData, confusion_of, dig, load_run, other_evaluations
from convkit.report.diagnosis import diagnosis_blocks
from convkit.report.doc import to_html, to_markdown
from convkit.report.deployment import deployment_blocks
from convkit.report.internals import first_conv_view, fixed_test_image, row_kernel, stage_maps
from convkit.report.receptive_field import receptive_fields
from convkit.report.stats import (
    acc_cell,
    acc_interval,
    fmt,
    paired_cell,
    pct,
    pool_stats,
    pts,
    run_stats,
    seeds_cell,
    shown,
    speedup_cell,
)
from convkit.suite import SUITES, TABLE_TITLES, Experiment
from convkit.uncertainty import rows_differ, versus_point

DEPTH_TABLE = 4
RF_TABLES = {3: ["kernel-eq"], 4: [], 7: []}  # tables whose section carries receptive fields (+ extra suites)


def _classes(run: RunData) -> list[str]:
    named = dig(run.eval_entry("fp32"), "confusion_classes")  # the matrix's own rows (eval.json since round 3)
    if isinstance(named, list) and named:
        return [str(c) for c in named]
    try:
        return list(get_model_config(run.model_name).classes)
    except (ConvkitError, TypeError):  # a model not registered here (or none recorded): eval.json's names
        per = dig(run.eval_entry("fp32"), "per_class") or []
        return [str(dig(c, "class", default=i)) for i, c in enumerate(per)]


def _weight_layers(model: nn.Module | None, model_name: str | None) -> dict[str, str] | None:
    """Return {layer name: "conv" | "fc"} of the architecture's conv and linear layers, None when it is unknown."""
    if model is None:
        try:
            model = create_model(model_name)
        except (ConvkitError, TypeError):
            return None
    return {n: "fc" if isinstance(m, nn.Linear) else "conv" for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _model_figures(run: RunData, rm: A.RunModel, out: Path, ctx: dict) -> dict:
    """The figures that need the trained model: first conv, and stage features for table 4 rows."""
    figs: dict = {}
    rel = run.path.name
    dataset, classes = _data_of(rm)
    if dataset is None:  # a user model exported on an image folder: no catalog test image to show it
        return {"conv1_note": f"{NOT_MEASURED} (the model was measured on an image folder, not a catalog dataset)"}
    img = fixed_test_image(rm.config, dataset, classes, ctx.setdefault("images", {}))
    if img is None:
        return {"conv1_note": f"{NOT_MEASURED} (the {dataset} test data is not on this machine)"}
    caption = f"test image 0\n({img.class_name})"
    kernel = row_kernel(rm.model_name)
    view = first_conv_view(rm.model, img, rm.mean, rm.std, kernel,
                           rm.model_input if rm.contract is not None else None)
    if view is None:
        figs["conv1_note"] = "no convolution: this model is fully connected"
    else:
        what = f"the {kernel}×{kernel} conv this row is about" if kernel is not None else "first conv"
        figs["conv1"] = F.first_conv(view, img.image, caption, run.name, out / f"{rel}-conv1.png", what=what)
        figs["conv1_layer"] = view["layer"]
    if run.experiment and run.experiment.table == DEPTH_TABLE:
        stages = stage_maps(rm.model, img, rm.mean, rm.std)
        if stages:
            figs["stages"] = F.stage_maps(stages, f"{run.name}: feature maps after each stage ({img.class_name})",
                                          out / f"{rel}-stages.png")
    return figs


def _data_of(rm: A.RunModel) -> tuple[str | None, tuple[str, ...]]:
    """Return (catalog dataset, class names) the model was measured on: a user model's recorded contract (dataset
    None when it was an image folder), else its registered architecture's default config."""
    if rm.contract is not None:
        return rm.contract.dataset, tuple(rm.contract.classes)
    cfg = rm.default_cfg
    if isinstance(cfg, dict):  # a model whose default_cfg is timm's dict, not convkit's ModelConfig
        return cfg.get("dataset"), tuple(cfg.get("classes") or ())
    return cfg.dataset, tuple(cfg.classes)


def run_figures(run: RunData, out: Path, ctx: dict) -> dict:
    """Write the per-run figures; returns {kind: PNG path or None, kind_note: why absent}."""
    rel = run.path.name
    figs: dict = {}
    try:
        rm = A.load_run_model(run.path, run.model_name)
    except ConvkitError as exc:
        rm = None
        figs["conv1_note"] = f"{NOT_MEASURED} ({exc.message})"
    figs["curves"] = F.learning_curves(run.history, f"{run.name} — {run.label}",
                                       out / f"{rel}-curves.png") if run.history else None
    cm = confusion_of(run)
    classes = _classes(run)
    if cm and len(classes) == len(cm):
        figs["confusion"] = F.confusion(cm, classes, f"{run.name}: ORT fp32 confusion", out / f"{rel}-confusion.png")
        figs["pairs"] = F.confused_pairs(cm, classes)
    figs["grads"] = F.gradient_flow(run.grad_norms, f"{run.name}: gradient flow", out / f"{rel}-grads.png",
                                    _weight_layers(rm.model if rm else None, run.model_name))
    curves = [(f"{e.get('precision')} {e.get('provider')}", e["calibration"]) for e in run.eval_entries()
              if isinstance(e.get("calibration"), dict)]
    figs["calibration"] = F.reliability(curves, f"{run.name}: reliability (ORT)", out / f"{rel}-calibration.png")
    if rm is not None:
        try:
            figs.update(_model_figures(run, rm, out, ctx))
        except Exception as exc:  # e.g. a checkpoint whose model no longer runs: one run must not sink the report
            figs["conv1_note"] = f"{NOT_MEASURED} ({one_line(exc, 120)})"
    try:
        figs["deployment"] = deployment_blocks(run, out, lambda p: _rel(p, out.parent))
    except Exception as exc:  # a damaged eval.json: said in the run's section, the other runs still reported
        figs["deployment"] = [("p", f"Accuracy, latency and deployment: could not be read ({one_line(exc, 160)}).")]
    return figs


def _rel(path: Path | None, suite_dir: Path) -> str | None:
    return path.relative_to(suite_dir).as_posix() if path else None


def _image_or_note(blocks: list, path, suite_dir: Path, alt: str, note: str) -> None:
    if path:
        blocks.append(("img", _rel(path, suite_dir), alt))
    else:
        blocks.append(("p", f"{alt}: {note}."))


def run_blocks(run: RunData, figs: dict, suite_dir: Path) -> list[tuple]:
    """Return the blocks of one run's subsection: its figures, or "not measured" where their data is missing."""
    b: list[tuple] = [("h3", f"{run.name} — {run.label}")]
    if run.problems:
        b.append(("ul", [f"unreadable: {p}" for p in run.problems]))
    if run.provenance and run.provenance.findings:
        b.append(("p", "Held back (shown as STALE / EDITED / UNVERIFIED above, used in no comparison):"))
        b.append(("ul", run.provenance.lines()))
    others = other_evaluations(run)
    if others:
        b.append(("p", "Evaluations on other data than the run's test split (in no table above):"))
        b.append(("ul", others))
    b += figs.get("deployment") or []
    _image_or_note(b, figs.get("curves"), suite_dir, "Learning curves", f"{NOT_MEASURED} (no {A.HISTORY})")
    _image_or_note(b, figs.get("confusion"), suite_dir, "Confusion matrix", f"{NOT_MEASURED} (not evaluated)")
    if figs.get("pairs"):
        b.append(("p", "Most confused pairs (true → predicted): "
                  + "; ".join(f"{t} → {p} ({n})" for t, p, n in figs["pairs"]) + "."))
    conv_title = ("The k×k convolution this row is about" if run.model_name and row_kernel(run.model_name)
                  else "First convolution")
    _image_or_note(b, figs.get("conv1"), suite_dir, conv_title, figs.get("conv1_note", NOT_MEASURED))
    if figs.get("stages"):
        b.append(("img", _rel(figs["stages"], suite_dir), "Feature maps after each stage"))
    _image_or_note(b, figs.get("grads"), suite_dir, "Gradient flow", f"{NOT_MEASURED} (no {A.GRAD_NORMS})")
    _image_or_note(b, figs.get("calibration"), suite_dir, "Reliability diagram",
                   f"{NOT_MEASURED} (no calibration in {A.EvalNames(A.EVAL_PREFIX).json})")
    return b + diagnosis_blocks(run, suite_dir)


def _study(exp: Experiment) -> tuple[float | None, float | None]:
    return (exp.seed.test_acc, exp.seed.time_s) if exp.seed else (None, None)


def study_table(rows: list[tuple[Experiment, RunData | None, dict]]) -> tuple:
    """Return the table block of convkit's numbers beside the study's for one seed table."""
    out = []
    for exp, run, s in rows:
        study_acc, study_time = _study(exp)
        diff = (s["acc"] - study_acc) * 100 if s.get("acc") is not None and study_acc is not None else None
        absent = "not in the study" if exp.seed is None else None  # the study printed nothing for this row
        verdict = versus_point(acc_interval(s), study_acc)
        out.append([f"{exp.row}. {exp.title}", f"`{exp.name}`" if run else f"`{exp.name}` (no run)",
                    shown(s, "params", fmt(s.get("params"))), fmt(s.get("epochs")), f"{exp.seed_epochs}",
                    shown(s, "acc", acc_cell(s)), data_of(run),
                    absent or pct(study_acc),
                    absent or shown(s, "acc", pts(diff) + (f" ({verdict})" if verdict else "")),
                    shown(s, "gap_pts", seeds_cell(s, "gap_pts", "+.2f") or pts(s.get("gap_pts"))),
                    shown(s, "train_time_s", fmt(s.get("train_time_s"), ".1f", " s")),
                    absent or fmt(study_time, ".0f", " s")])
    return ("table", ["row", "experiment", "params", "epochs", "study epochs", "test acc [95 %] or mean ± sd", "on",
                      "study acc", "Δ vs study (pts; above / below / within noise)", "train−test (pts)",
                      "train time", "study time"], out)


def data_of(run: RunData | None) -> str:
    """Return the data the run's accuracies are measured on: "test split of <dataset> (<N> images)"."""
    n = dig(run.metrics, "test_images") if run else None
    dataset = dig(run.metrics, "dataset") or dig(run.config, "dataset") if run else None
    if not dataset:
        return NOT_MEASURED
    label = display_name(dataset, str(dig(run.metrics, "data_source") or ""))
    return f"test split of {label}" + (f" ({n:,} images)" if isinstance(n, int) else "")


def ort_table(rows: list[tuple[Experiment, RunData | None, dict]]) -> tuple:
    """Return the table block of ONNX Runtime figures (accuracy, deltas, latency, int8, ECE) for one seed table."""
    out = []
    for exp, run, s in rows:
        pooled = NOT_MEASURED if s.get("seeds") is None else f"per seed ({s['seeds']} seeds)"
        gate = {True: "passed", False: "**FAILED**"}.get(s.get("gate"), pooled)
        fp16 = (s["fp16_acc"] - s["ort_acc"]) * 100 if s.get("fp16_acc") is not None and s.get("ort_acc") else None
        cost = -s["int8_cost_pts"] if s.get("int8_cost_pts") is not None else None
        out.append([f"{exp.row}. {exp.title}", s.get("provider") or NOT_MEASURED, eval_data_of(run),
                    shown(s, "ort_acc", acc_cell(s, "ort_acc")),
                    shown(s, "ort_delta_pts", seeds_cell(s, "ort_delta_pts", "+.2f")
                          or paired_cell(s.get("ort_delta_test"), s.get("ort_delta_pts"))), gate,
                    shown(s, "lat_fp32_ms", seeds_cell(s, "lat_fp32_ms", ".3f")
                          or fmt(s.get("lat_fp32_ms"), ".3f", " ms")),
                    shown(s, "fp16_acc", acc_cell(s, "fp16_acc")),
                    shown(s, "fp16_acc", paired_cell(s.get("fp16_test"), fp16)),
                    shown(s, "int8_acc", acc_cell(s, "int8_acc")),
                    shown(s, "int8_cost_pts", seeds_cell(s, "int8_cost_pts", "+.2f", -1.0)
                          or paired_cell(s.get("int8_test"), cost)),
                    shown(s, "int8_speedup", seeds_cell(s, "int8_speedup", ".2f") or speedup_cell(s)),
                    shown(s, "ece", seeds_cell(s, "ece", ".3f") or fmt(s.get("ece"), ".3f"))])
    return ("table", ["row", "provider", "on", "ORT fp32 acc", "ORT − PyTorch (pts, McNemar)", "gate", "fp32 b1 p50",
                      "fp16 acc", "fp16 − fp32 (pts, McNemar)", "int8 acc", "int8 − fp32 (pts, McNemar)",
                      "int8 speed-up [interval]", "ECE (fp32)"], out)


def eval_data_of(run: RunData | None) -> str:
    """Return the data eval.json measured: "<split> of <dataset label> (<N> images)"."""
    ds = dig(run.eval, "dataset") if run else None
    if not isinstance(ds, dict):
        return NOT_MEASURED
    n = ds.get("n")
    return f"{ds.get('split', 'test')} split of {ds.get('label') or ds.get('name')}" + (
        f" ({n:,} images)" if isinstance(n, int) else "")


def observations(rows: list[tuple[Experiment, RunData | None, dict]]) -> list[str]:
    """Return sentences computed from the table's numbers: best row, overfitting, ORT change, int8 cost/speed.

    A difference is called real only when its test says so: the best row against the runner-up by Welch's t-test
    over seeds (or disjoint 95 % intervals with one seed), ORT and int8 deltas by McNemar's exact test.
    """
    have = [(e, s) for e, r, s in rows if s.get("acc") is not None]
    obs = []
    if have:
        ranked = sorted(have, key=lambda es: (-es[1]["acc"], es[0].row))
        e, s = ranked[0]
        line = f"Best row: {e.title} at {acc_cell(s)} test accuracy"
        if len(ranked) > 1:
            e2, s2 = ranked[1]
            differ = rows_differ((s.get("spread") or {}).get("acc"), (s2.get("spread") or {}).get("acc"),
                                 acc_interval(s), acc_interval(s2))
            line += {True: f", ahead of {e2.title} ({pct(s2['acc'])}) beyond noise",
                     False: f", not distinguishable from {e2.title} ({pct(s2['acc'])}): a tie within noise",
                     None: f", ahead of {e2.title} ({pct(s2['acc'])}) by an amount of unknown uncertainty"}[differ]
        seeded = [x for x, _, _ in rows if x.seed and x.seed.test_acc is not None]
        if seeded:
            sb = max(seeded, key=lambda x: (x.seed.test_acc, -x.row))
            line += f"; the study's best was {sb.title} at {pct(sb.seed.test_acc)}"
        obs.append(line + ".")
    else:
        obs.append(f"Test accuracy: {NOT_MEASURED} for every row.")
    gaps = [(e, s["gap_pts"]) for e, s in have if s.get("gap_pts") is not None]
    if gaps:
        e, g = max(gaps, key=lambda eg: (eg[1], -eg[0].row))
        line = f"Largest train−test accuracy gap (overfitting): {e.title}, {pts(g)} points"
        if len(gaps) > 1:
            lo = min(gaps, key=lambda eg: (eg[1], eg[0].row))
            line += f"; smallest {lo[0].title}, {pts(lo[1])} points"
        obs.append(line + ".")
    deltas = [(e, s["ort_delta_pts"], s.get("ort_delta_test")) for e, _, s in rows
              if s.get("ort_delta_pts") is not None]
    real = [e.title for e, _, t in deltas if isinstance(t, dict) and t.get("distinguishable") is True]
    tested = sum(1 for _, _, t in deltas if isinstance(t, dict))
    obs.append(f"ORT − PyTorch accuracy: largest change {max(abs(d) for _, d, _ in deltas):.2f} points over "
               f"{len(deltas)} evaluated row(s); distinguishable from zero (McNemar, p < 0.05) in {len(real)} of "
               f"{tested} tested{': ' + ', '.join(real) if real else ''}." if deltas
               else f"ORT − PyTorch accuracy: {NOT_MEASURED}.")
    int8 = [(e, s) for e, _, s in rows if s.get("int8_cost_pts") is not None]
    held = [e.title for e, _, s in rows if "int8_acc" in s.get("held", {})]
    if int8:
        obs.append("int8 − fp32 accuracy and batch-1 speed-up: " + "; ".join(
            f"{e.title} {paired_cell(s.get('int8_test'), -s['int8_cost_pts'])}, {speedup_cell(s)}"
            for e, s in int8) + ".")
    else:
        obs.append(f"int8 cost and speed-up: {NOT_MEASURED} (no int8 variant evaluated).")
    if held:
        obs.append(f"int8 figures held back as stale (their model file changed or is gone): {', '.join(held)}.")
    return obs


def rf_models(table: int, suite_runs: list[Experiment]) -> list[tuple[str, str]]:
    """Return [(label, model name)] whose receptive fields the section of ``table`` shows."""
    exps = [e for e in suite_runs if e.table == table]
    for extra in RF_TABLES.get(table, []):
        exps += [e for e in SUITES[extra] if e not in exps]
    seen, out = set(), []
    for e in exps:
        if e.model not in seen:
            seen.add(e.model)
            out.append((f"{e.name}", e.model))
    return out


def rf_blocks(table: int, exps: list[Experiment], out: Path, suite_dir: Path) -> list[tuple]:
    """Return the receptive-field table and plot blocks for ``table`` (analytic, from the architectures)."""
    models = rf_models(table, exps)
    computed, rows = {}, []
    for label, name in models:
        try:
            computed[label] = receptive_fields(create_model(name))
        except Exception as exc:  # torch.fx cannot trace every model; say so instead of guessing
            rows.append([f"`{label}`", "—", "—", "—", f"not computed ({type(exc).__name__})"])
            continue
        for r in computed[label]:
            ctx = " + global (SE)" if r["global_context"] else ""
            rows.append([f"`{label}`", f"`{r['layer']}`", r["op"], r["jump"], f"{r['rf']}{ctx}"])
    blocks: list[tuple] = [("h3", "Receptive fields"), (
        "p", "Computed from each architecture: r_out = r_in + (k − 1)·dilation·jump_in, "
             "jump_out = jump_in·stride, "
             "following residual branches (their union); in pixels of the input image.")]
    groups: dict[str, list] = {}
    for label, name in models:
        if computed.get(label):
            key = "equal-parameter set" if name.startswith("kernel_eq_") else TABLE_TITLES.get(table, str(table))
            groups.setdefault(key, []).append((label, computed[label]))
    if groups:
        size = get_model_config(models[0][1]).input_shape[-1]
        path = F.receptive_field_plot(sorted(groups.items(), key=lambda kv: kv[0].startswith("equal")), size,
                                      out / f"rf-table{table}.png")
        blocks.append(("img", _rel(path, suite_dir), f"Receptive field per layer, {TABLE_TITLES.get(table)}"))
    blocks.append(("table", ["model", "layer", "op", "jump", "receptive field (px)"], rows))
    return blocks


def table_section(table: int, rows: list, figs: dict, out: Path, suite_dir: Path, exps: list,
                  by_name: dict) -> list[tuple]:
    """Return the blocks of one seed table: both tables, observations, overlay, receptive fields, run figures."""
    b: list[tuple] = [("h2", TABLE_TITLES.get(table, f"Table {table}")),
                      ("p", "convkit beside the study (study values from convkit.suite):"), study_table(rows),
                      ("p", "ONNX Runtime (provider of the fp32 evaluation; latency = batch 1, p50):"),
                      ort_table(rows), ("h3", "Observations"), ("ul", observations(rows))]
    curves = [(e.title, r.history, e.seed.test_acc if e.seed else None) for e, r, _ in rows if r and r.history]
    bands = {e.title: [x.history for x in s["runs"] if x.history] for e, _, s in rows if s.get("runs")}
    if curves:
        path = F.overlay(curves, f"{TABLE_TITLES.get(table, table)}: test accuracy per epoch",
                         out / f"overlay-table{table}.png", bands)
        b.append(("img", _rel(path, suite_dir), f"Test accuracy per epoch, all rows of table {table}"))
    else:
        b.append(("p", f"Test-accuracy overlay: {NOT_MEASURED} (no {A.HISTORY} in this table)."))
    b += robustness.section(TABLE_TITLES.get(table, f"table {table}"), [(e, r) for e, r, _ in rows], by_name, out,
                            lambda p: _rel(p, suite_dir))
    if table in RF_TABLES:
        b += rf_blocks(table, exps, out, suite_dir)
    for _, run, s in rows:
        for each in s.get("runs") or ([run] if run is not None else []):
            b += run_blocks(each, figs[each.name], suite_dir)
    return b


def experiment_rows(exps: list[Experiment], runs: list[RunData], stats: dict) -> dict[str, tuple]:
    """Return {experiment name: (its run or first seed's run, its figures)}: over several seeds (train-all
    --seeds, trained anywhere) the figures are pooled (report.stats.pool_stats) and ``runs`` lists the seeds."""
    out: dict[str, tuple] = {}
    for e in exps:
        mine = [r for r in runs if r.experiment is not None and r.experiment.name == e.name]
        if len(mine) > 1:
            out[e.name] = (mine[0], {**pool_stats([stats[r.name] for r in mine]), "runs": mine})
        else:
            out[e.name] = (mine[0], stats[mine[0].name]) if mine else (None, {})
    return out


def suite_blocks(runs: list[RunData], stats: dict, out: Path, suite_dir: Path) -> list[tuple]:
    """Return the suite-wide figures: parameters vs accuracy and latency vs accuracy per provider/precision."""
    pts_ = [(r.name, stats[r.name]["params"], stats[r.name]["acc"], r.experiment.table if r.experiment else 0)
            for r in runs if stats[r.name]["params"] and stats[r.name]["acc"] is not None]
    lat: dict[str, list] = {}
    for r in runs:
        for e in r.eval_entries():
            prov, prec = e.get("provider"), e.get("precision")
            row, acc = r.latency_b1_row(prec, prov), dig(e, "accuracy")
            ms = dig(row, "p50_ms")
            if isinstance(prov, str) and isinstance(ms, (int, float)) and ms > 0 and isinstance(acc, (int, float)):
                lat.setdefault(prov, []).append((r.name, prec, ms, acc, dig(row, "p50_ci_ms"),
                                                 dig(e, "accuracy_ci"), dig(row, "unstable")))
    b: list[tuple] = [("h2", "All experiments")]
    for path, alt in ((F.params_vs_accuracy(pts_, out / "params-accuracy.png"), "Parameters vs test accuracy"),
                      (F.latency_vs_accuracy(lat, out / "latency-accuracy.png"), "Batch-1 latency vs accuracy")):
        _image_or_note(b, path, suite_dir, alt, f"{NOT_MEASURED} (no run has the numbers)")
    return b


def _suite_of(runs: list[RunData]) -> str | None:
    names = Counter(r.experiment.suite for r in runs if r.experiment)
    return sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if names else None


def _intro(suite_dir: Path, runs: list[RunData], suite: str | None) -> list[tuple]:
    evaluated = sum(1 for r in runs if r.eval_entries())
    blocks = [("h1", f"convkit report — {suite_dir.name}"),
              ("p", f"Built from {len(runs)} run folder(s) "
                  f"{f'of suite `{suite}`' if suite else 'outside the built-in suites (your own models)'} ({evaluated} evaluated "
                    f"with ONNX Runtime). Every number and statement below is computed from the files in the run "
                    f"folders; \"{NOT_MEASURED}\" marks what they do not hold. Figures are in `{A.REPORT_DIR}/`.")]
    capped = [(r.name, dig(r.config, "max_images")) for r in runs if dig(r.config, "max_images")]
    if capped:
        blocks.append(("p", "Fewer images (`--max-images`): " + ", ".join(
            f"{name} was trained and tested on at most {n:,} images per split" for name, n in capped)
            + "; their figures are a quick look, not results."))
    return blocks


def report_folders(suite_dir: Path) -> list[Path]:
    """Return the folders to report on: ``suite_dir`` itself when it is one run, user-model or evaluation folder
    (it holds a run file or an eval.json), else its run folders and its evaluation folders (`convkit evaluate
    model.onnx` writes <stem>_eval/ holding only the evaluation). ConvkitError (exit 2) when there is none."""
    if suite_dir.is_dir() and any((suite_dir / m).is_file() for m in (*A.RUN_MARKERS, EVAL_JSON)):
        return [suite_dir]
    found = A.run_folders(suite_dir, allow_empty=True)
    evaluations = [p for p in sorted(suite_dir.iterdir()) if p.is_dir() and (p / EVAL_JSON).is_file()
                   and p not in found]
    return sorted(found + evaluations) or A.run_folders(suite_dir)  # none: run_folders says what is missing


LEFTOVER_AGE_S = 300  # a figure's temporary file older than this belongs to a build that was killed


def remove_leftovers(out: Path) -> list[Path]:
    """Delete the temporary figure files (``.NAME.png.*.tmp``) a killed build left in ``out``: those older than
    LEFTOVER_AGE_S, so a build running beside this one keeps its own; returns what was deleted."""
    removed = []
    for tmp in out.glob(".*.png.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > LEFTOVER_AGE_S:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone meanwhile, or not ours to delete: the report does not depend on it
            continue
    return removed


def build_report(suite_dir: Path | str) -> dict:
    """Write ``report.md``, ``report.html`` and the figures of ``suite_dir``; returns {"md", "html", "figures",
    "runs", "seconds"}. Raises ConvkitError when the folder holds no run."""
    t0 = time.perf_counter()
    suite_dir = Path(suite_dir)
    data_freshness.forget()  # the data is re-read once per report: it may have changed since the last one
    runs = [load_run(p) for p in report_folders(suite_dir)]
    out = ensure_writable_dir(suite_dir / A.REPORT_DIR)
    remove_leftovers(out)
    suite = _suite_of(runs)
    exps = SUITES.get(suite, []) if suite else []
    ctx: dict = {}
    with plot_style():
        figs = {r.name: run_figures(r, out, ctx) for r in runs}
        stats = {r.name: run_stats(r) for r in runs}
        blocks = _intro(suite_dir, runs, suite) + suite_blocks(runs, stats, out, suite_dir)
        tables = sorted({e.table for e in exps})
        per_exp = experiment_rows(exps, runs, stats)
        # the robustness section finds a row's run (over seeds: the first seed's) and the baseline by experiment name
        by_name = {**{r.name: r for r in runs}, **{n: row[0] for n, row in per_exp.items() if row[0] is not None}}
        ran = [t for t in tables if any(e.table == t and per_exp[e.name][0] is not None for e in exps)]
        if len(ran) < len(tables):
            blocks.append(("p", "Tables of the study without any run folder here (" + NOT_MEASURED + "): "
                           + ", ".join(TABLE_TITLES.get(t, str(t)) for t in tables if t not in ran) + "."))
        for table in ran:
            rows = [(e, *per_exp[e.name]) for e in exps if e.table == table]
            blocks += table_section(table, rows, figs, out, suite_dir, exps, by_name)
    blocks += comparison.blocks(suite_dir)  # a `convkit compare` result kept in the suite folder
    others = [r for r in runs if r.experiment is None or r.experiment not in exps]
    if others:
        blocks.append(("h2", "Other runs (not rows of this suite)"))
        for r in others:
            blocks += run_blocks(r, figs[r.name], suite_dir)
    # report/ belongs to the report: figures of an earlier build that this one did not draw would be stale.
    drawn = {suite_dir / b[1] for b in blocks if b[0] == "img"}
    for stale in sorted(set(out.glob("*.png")) - drawn):
        stale.unlink()
    md = write_text(suite_dir / A.REPORT_MD, to_markdown(blocks))
    html = write_text(suite_dir / A.REPORT_HTML, to_html(blocks, suite_dir, f"convkit report — {suite_dir.name}"))
    figures = sorted(out.glob("*.png"))
    return {"md": md, "html": html, "figures": figures, "runs": len(runs), "seconds": time.perf_counter() - t0}

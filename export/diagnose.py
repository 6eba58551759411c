"""``convkit diagnose RUN``: why a number of an exported run moved, measured on its real labelled images.

For a run folder (or a user model's export folder) that ``convkit export`` wrote:

* **int8**: when export made an int8 file (kept or ``model.int8.rejected.onnx``), the file is rebuilt from the fp32
  file with the recorded calibration, its tensor groups ranked by SQNR and the leading ones measured kept in fp32
  (top-1, flips against fp32, McNemar against full int8): convkit.export.int8_sensitivity;
* **divergence**: the first PyTorch module whose output the fp32 ONNX file stops matching (convkit.export.divergence);
* **per-class**: every ONNX file against fp32 and fp32 ONNX against PyTorch, each class tested (convkit.class_drops).

It writes ``diagnose.json`` (schema convkit.diagnose/1, this module owns its layout) and ``diagnose.md`` into the
folder, atomically, and returns the document; ``headline`` holds the short answer printed first.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from convkit.artifacts import (
    CHECKPOINT,
    DIAGNOSE_JSON,
    DIAGNOSE_MD,
    EXPORT_JSON,
    VARIANT_FILES,
    load_run_model,
    read_artifact,
    rejected_name,
    run_lock,
    write_artifact,
)
from convkit.atomic import write_text
from convkit.class_drops import describe_drops, per_class_drops
from convkit.errors import ConvkitError
from convkit.export import divergence as div
from convkit.export import int8_sensitivity as sens
from convkit.export.keep_fp32 import latency_rows, speed
from convkit.export.quantize import CALIB_METHOD, prepare_int8
from convkit.onnx_meta import file_sha256
from convkit.reference import torch_logits
from convkit.text import md_code, md_inline, md_text
from convkit.uncertainty import format_paired, mcnemar

N_IMAGES = 1000


def model_file(folder: Path, precision: str) -> Path | None:
    """Return the folder's ``precision`` file: the gated one, else the rejected one, else None."""
    for name in (VARIANT_FILES[precision], rejected_name(precision)):
        if (folder / name).is_file():
            return folder / name
    return None


def load_images(folder: Path, n_images: int, data_dir: str | None = None):
    """Return (RunModel, model input x [n, C, H, W] float32, labels, calibration images (model input) or None,
    class names) for the export folder: a convkit run's test split, or a user model's recorded data contract."""
    from convkit.export.pipeline import ExportSettings, load_inputs

    settings = ExportSettings(precisions=("int8",), n_images=n_images, data_dir=data_dir)
    if (folder / CHECKPOINT).is_file():
        from convkit.data.loader import normalize
        from convkit.export.pipeline import CALIB_SEED
        from convkit.export.quantize import calibration_images

        inputs = load_inputs(folder / CHECKPOINT, None, folder, settings)
        train = inputs.data.train_images
        _, calib = calibration_images(train, min(len(train), 512), CALIB_SEED)
        calib_x = normalize(calib, inputs.run.mean, inputs.run.std).numpy()
        return inputs.run, inputs.x.numpy(), inputs.labels, calib_x, list(inputs.run.default_cfg.classes)
    from convkit.export.user_export import load_user_data

    run = load_run_model(folder)
    contract = run.contract
    try:
        data = load_user_data(contract, settings, bool(run.config.get("sample")))
        calib = contract.prepare(data.calib).numpy()
    except ConvkitError:  # no calibration images: int8 is not diagnosed, the rest is
        data = load_user_data(contract, ExportSettings(n_images=n_images, data_dir=data_dir),
                              bool(run.config.get("sample")))
        calib = None
    return run, contract.prepare(data.images).numpy(), data.labels, calib, list(contract.classes)


def diagnose(folder, n_images: int = N_IMAGES, top: int = sens.TOP_CANDIDATES, device: str = "cpu",
             data_dir: str | None = None) -> dict:
    """Diagnose the export folder ``folder``; returns diagnose.json's content (also written, with diagnose.md).
    ConvkitError (exit 2) when the folder holds no export."""
    folder = Path(folder)
    export = read_artifact(folder / EXPORT_JSON, "export")
    fp32_path = model_file(folder, "fp32")
    if export is None or fp32_path is None:
        raise ConvkitError(f"{folder} holds no export (export.json and model.onnx); run `convkit export` first")
    with run_lock(folder, f"convkit diagnose {folder}"):
        t0 = time.perf_counter()
        run, x, labels, calib, classes = load_images(folder, n_images, data_dir)
        fp32 = onnx.load(str(fp32_path))
        ref = torch_logits(run.model, x, device=device)
        fp32_logits = sens.logits_of(fp32, x)
        doc = {"folder": str(folder), "images": int(len(x)), "device": device, "fp32_file": fp32_path.name,
               "fp32_sha256": file_sha256(fp32_path),
               "export_gate": export.get("gate"), "sections": {}}
        doc["sections"]["divergence"] = div.first_divergence(fp32, run.model, x, device)
        timed = {"divergence_s": time.perf_counter() - t0}
        predictions = {"PyTorch": ref, "fp32": fp32_logits}
        int8_entry = (export.get("precisions") or {}).get("int8")
        if int8_entry is not None and calib is not None:
            t1 = time.perf_counter()
            doc["sections"]["int8"] = int8_section(fp32, calib, x, labels, ref, fp32_logits, int8_entry, top)
            predictions["int8"] = doc["sections"]["int8"].pop("_logits")
            timed["int8_s"] = time.perf_counter() - t1
        fp16_path = model_file(folder, "fp16")
        if fp16_path is not None:
            fp16 = onnx.load(str(fp16_path))
            predictions["fp16"] = sens.logits_of(fp16, x)
            doc["sections"]["divergence_fp16"] = div.first_divergence(fp16, run.model, x, device, div.ATOL,
                                                                      div.FP16_RTOL, metadata_from=fp32)
        doc["sections"]["per_class"] = per_class_section(predictions, labels, classes)
        timed["total_s"] = time.perf_counter() - t0
        doc["cost"] = timed
        doc["headline"] = headline(doc)
        write_artifact(folder / DIAGNOSE_JSON, "diagnose", doc)
        write_text(folder / DIAGNOSE_MD, markdown(doc))
    return doc


def int8_section(fp32, calib, x, labels, ref, fp32_logits, entry: dict, top: int) -> dict:
    """Return the int8 section: the int8 file rebuilt with the recorded calibration, its loss against PyTorch
    with the paired interval, the sensitivity report, and the speed of fp32, full int8 and the top culprit kept."""
    method = (entry.get("quantization") or {}).get("calibration_method") or CALIB_METHOD
    limits = dict(entry.get("gate_settings") or sens.DEFAULT_LIMITS)
    with tempfile.TemporaryDirectory(prefix="convkit-diagnose-") as tmp:
        prepared, _ = prepare_int8(fp32)
        problem = sens.Problem(fp32, prepared, calib, x, labels, ref, limits, method, Path(tmp), "cpu", fp32_logits)
        report = sens.sensitivity(problem, top)
        full = report["_full"]
        loss = mcnemar(ref.argmax(1) == labels, full.correct).to_dict()
        out = {**sens.strip_private(report), "calibration_method": method, "loss_vs_pytorch": loss,
               "recorded_gate": entry.get("gate"), "_logits": logits_of_trial(problem, full)}
        best = report["measured"][0] if report["measured"] else None
        if best is not None and best["gain_points"] > 0:
            fp32_rows = latency_rows(fp32, x)
            out["latency"] = {"provider": "cpu", "fp32": speed(fp32_rows, fp32_rows),
                              "full_int8": speed(latency_rows(full.proto, x), fp32_rows),
                              "top_kept": speed(latency_rows(report["_trials"][best["tensor"]].proto, x), fp32_rows)}
    return out


def logits_of_trial(problem, trial) -> np.ndarray:
    """Return the logits of a Trial's int8 file on the problem's images (for the per-class tests)."""
    return sens.logits_of(trial.proto, problem.x, problem.provider)


def per_class_section(predictions: dict, labels, classes) -> dict:
    """Return per-class tests of every ONNX file against fp32 ONNX, and of fp32 ONNX against PyTorch."""
    correct = {k: v.argmax(1) == labels for k, v in predictions.items()}
    out = {"fp32 vs PyTorch": per_class_drops(correct["PyTorch"], correct["fp32"], labels, classes)}
    for name in ("fp16", "int8"):
        if name in correct:
            out[f"{name} vs fp32"] = per_class_drops(correct["fp32"], correct[name], labels, classes)
    return out


def headline(doc: dict) -> list[str]:
    """Return the short answer, one line per finding, most important first."""
    lines = []
    int8 = doc["sections"].get("int8")
    if int8:
        loss = int8["loss_vs_pytorch"]
        lo, hi = loss["delta_ci"]
        if loss["distinguishable"]:
            verb, sign = ("loses", -1) if loss["delta"] < 0 else ("gains", 1)
            low, high = sorted((sign * lo * 100, sign * hi * 100))
            text = (f"int8 ({int8['calibration_method']}) {verb} {sign * loss['delta'] * 100:.1f} pts "
                    f"[{low:.1f}, {high:.1f}] against PyTorch on {loss['n']} images")
        else:
            text = (f"int8 ({int8['calibration_method']}) changes top-1 by {loss['delta'] * 100:+.1f} pts "
                    f"[{lo * 100:+.1f}, {hi * 100:+.1f}] against PyTorch on {loss['n']} images: within noise")
        best = int8["measured"][0] if int8["measured"] else None
        if best and best["gain_points"] > 0 and best["vs_full_int8"]["distinguishable"]:
            module = (best["module"] or {}).get("path") or "the model input"
            share = best["flips_share"]
            text += (f"; {share:.0%} of its flips come from `{best['tensor']}` ({best['op_types'][0]}) of "
                     f"`{module}`" if share is not None else f"; `{best['tensor']}` of `{module}` costs most")
            drop = best["gate"].get("drop_points")
            lat = int8.get("latency") or {}
            kept, full = (lat.get("top_kept") or {}).get("1"), (lat.get("full_int8") or {}).get("1")
            text += f"; keeping it fp32: {0.0 - drop + 0.0:+.1f} pts vs PyTorch" if drop is not None else ""
            if kept and full:
                text += (f", {kept['speedup_vs_fp32']:.2f}× fp32 speed at batch 1 instead of "
                         f"{full['speedup_vs_fp32']:.2f}×")
                if kept["vs_fp32"] == "slower":
                    text += " (slower than fp32: keep fp32)"
            text += f" (McNemar p = {best['vs_full_int8']['p_value']:.2g} against full int8)"
        elif best is not None:
            text += "; no single tensor group kept in fp32 recovers accuracy beyond noise"
        lines.append(text)
    lines.append(div.describe(doc["sections"]["divergence"]))
    if "divergence_fp16" in doc["sections"]:
        lines.append(div.describe(doc["sections"]["divergence_fp16"], "the fp16 file"))
    for name, result in doc["sections"]["per_class"].items():
        candidate, base = name.split(" vs ")
        lines.append(describe_drops(result, candidate, base))
    return lines


def markdown(doc: dict) -> str:
    """Return diagnose.md: the short answer, then one section per finding (foreign names escaped)."""
    out = [f"# Diagnosis of {md_text(Path(doc['folder']).name)}", ""]
    out += [f"- {md_inline(line)}" for line in doc["headline"]] + [""]
    int8 = doc["sections"].get("int8")
    if int8:
        out += ["## int8: which tensor costs the accuracy", "",
                f"Rebuilt from {md_text(doc['fp32_file'])} with {md_text(int8['calibration_method'])} calibration; "
                f"loss against PyTorch: {md_text(format_paired(int8['loss_vs_pytorch']))}. Tensor groups (a tensor "
                "and what it flows into through Relu/MaxPool/Flatten, which share its scale) kept in fp32 one at a "
                f"time; {md_text(int8['test'])}; SQNR on {int8['sqnr_images']} images.", "",
                "| tensor | module | nodes kept fp32 | SQNR dB | bulk SQNR dB | top-1 kept | gain pts | flips removed "
                "| p |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in int8["measured"]:
            module = f"{r['module']['path'] or '<root>'} ({r['module']['class']})" if r["module"] else "model input"
            nodes = ", ".join(r["nodes"][:6]) + (" …" if len(r["nodes"]) > 6 else "")
            share = f" ({r['flips_share']:.0%})" if r["flips_share"] is not None else ""
            out.append(f"| {md_code(r['tensor'])} | {md_text(module)} | {md_text(nodes)} | "
                       f"{_num(r['qdq_sqnr_db'])} | {_num(r['bulk_sqnr_db'])} | {r['accuracy']:.4f} | "
                       f"{r['gain_points']:+.2f} | {r['flips_removed']}{share} | {r['vs_full_int8']['p_value']:.2g} |")
        out += ["", f"Full int8: top-1 {int8['full_int8']['accuracy']:.4f}, {int8['full_int8']['flips_vs_fp32']} "
                "images flip against fp32. Repair: `convkit export --precision int8 --keep-fp32 auto` (or "
                "`--keep-fp32 NAME`).", ""]
    d = doc["sections"]["divergence"]
    out += ["## Where ONNX stops matching PyTorch", "", md_inline(div.describe(d)), "",
            f"{d['compared']} modules aligned through the exporter's metadata on {d['images']} images; rule: "
            f"{md_text(d['rule'])}.", ""]
    out += ["## Per-class changes", ""]
    for name, result in doc["sections"]["per_class"].items():
        out += [f"### {md_text(name)}", "", f"{md_text(result['test'])}; {md_text(result['correction'])}, "
                f"α = {result['alpha']:g}.", "", "| class | images | base | candidate | Δ pts | p | p (Holm) |",
                "|---|---|---|---|---|---|---|"]
        rows = sorted(result["rows"], key=lambda r: r["p_holm"])[:20]
        for r in rows:
            mark = " **significant**" if r["significant"] else ""
            out.append(f"| {md_text(r['class'])} | {r['images']} | {r['base_accuracy']:.3f} | "
                       f"{r['candidate_accuracy']:.3f} | {r['delta_points']:+.1f} | {r['p_value']:.2g} | "
                       f"{r['p_holm']:.2g}{mark} |")
        out.append("")
    cost = doc["cost"]
    out += [f"Cost: {cost['total_s']:.1f} s in all" + (f" (int8 {cost['int8_s']:.1f} s)" if "int8_s" in cost else "")
            + ".", ""]
    return "\n".join(out)


def _num(value) -> str:
    return "—" if value is None else f"{value:.1f}"

"""``convkit compare BASE NEW``: did accuracy or latency regress beyond noise? Loaded lazily by the main CLI group;
module-level imports stay light (click)."""

from __future__ import annotations

from pathlib import Path

import click

from convkit.compare import DEFAULT_LATENCY_MARGIN_PERCENT, DEFAULT_MARGIN_POINTS
from convkit.errors import ConvkitError
from convkit.preprocessing_flags import geometry_options


def _run(base: str, new: str, opts: dict) -> dict:
    """Return the comparison document of BASE and NEW (see convkit.compare.gate.compare), outputs written."""
    from convkit.compare import gate, inputs, latency_ab, outputs

    gate_opts = gate.GateOptions(opts["margin"], opts["latency_margin"] / 100)
    onnx = [inputs.is_onnx(p) for p in (base, new)]
    times, ab = None, None
    if all(onnx):
        from convkit.compare.here import evaluate_pair

        ab = latency_ab.AbTiming(blocks=opts["blocks"], calls=opts["block_calls"]) if opts["latency"] else None
        b, n, times = evaluate_pair(Path(base), Path(new), eval_options(opts), ab)
    elif any(onnx):
        raise ConvkitError("pass two .onnx files (evaluated here) or two evaluations, not one of each: evaluate the "
                           "file first with `convkit evaluate`, on the data the evaluation used")
    else:
        if opts["data_path"] or opts["dataset"]:
            raise ConvkitError("--data/--dataset apply to two .onnx files; stored evaluations carry their own data")
        b = inputs.load_stored(base, opts["variant"])
        n = inputs.load_stored(new, opts["new_variant"] or opts["variant"])
    notes = inputs.refuse_mismatch(b.predictions, n.predictions, opts["allow_preprocessing_change"])
    notes += [x for side in (b, n) for x in side.notes]
    doc = gate.compare(b, n, gate_opts, times, ab, notes)
    if times is not None:  # what the A/B's figures were measured on, as eval.json records it
        from convkit.evaluate.run import hardware

        doc["latency_hardware"] = hardware(opts["provider"] != "cpu", 0)
    out = Path(opts["out"])
    images = n.images if n.images is not None else b.images
    if images is None and doc["flips"]["lost"] and b.predictions.image_paths is None:
        images = inputs.catalog_images(b.predictions)
    sheet = outputs.contact_sheet(out / outputs.SHEET_PNG, doc, images)
    if doc["flips"]["lost"] and sheet is None:
        doc["notes"].append("no contact sheet: the images are not readable here")
    doc["files"] = outputs.write_all(doc, out, Path(opts["junit"]) if opts["junit"] else None, sheet)
    return doc


def eval_options(opts: dict):
    """Return the EvalOptions two files are evaluated with here (the evaluation's own defaults otherwise)."""
    from convkit.evaluate.options import DataOptions, EvalOptions, ProviderOptions, TimingOptions
    from convkit.preprocessing_flags import geometry_from_cli

    def floats(text):
        return tuple(float(v) for v in text.split(",")) if text else None

    try:
        mean, std = floats(opts["mean"]), floats(opts["std"])
    except ValueError:
        raise ConvkitError("--mean/--std take comma-separated numbers, e.g. 0.5,0.5,0.5") from None
    data = DataOptions(dataset=opts["dataset"], data_dir=opts["data_dir"], data_path=opts["data_path"],
                       classes=opts["classes"], geometry=geometry_from_cli(opts), sample=opts["sample"], mean=mean,
                       std=std, max_images=opts["max_images"])
    return EvalOptions(data=data, providers=ProviderOptions(provider=opts["provider"], threads=opts["threads"]),
                       timing=TimingOptions(latency=False))


@click.command("compare")
@click.argument("base", type=click.Path())
@click.argument("new", type=click.Path())
@click.option("--margin", type=click.FloatRange(0, 100), default=DEFAULT_MARGIN_POINTS, show_default=True,
              help="Accuracy points NEW may lose and still pass (non-inferiority, top-1, top-5 and per class). 0.5 is "
                   "stricter than MLPerf's 99 %-of-reference rule and decides on 10,000 images for models that "
                   "disagree on up to ~6 % of them; an ORT upgrade or provider switch decides at 0.2.")
@click.option("--latency-margin", type=click.FloatRange(0, 1000), default=DEFAULT_LATENCY_MARGIN_PERCENT,
              show_default=True,
              help="Percent slower NEW may be at p50/p99 and still pass.")
@click.option("--out", type=click.Path(), default="compare", show_default=True,
              help="Folder for compare.md, compare.json and flips.png.")
@click.option("--junit", type=click.Path(), default=None, help="Also write a JUnit XML file: one test case per check.")
@click.option("--variant", default=None,
              help="Which stored variant to compare, e.g. int8 or fp16/cuda (default: each evaluation's primary).")
@click.option("--new-variant", default=None,
              help="NEW's variant when it differs from BASE's, e.g. --variant fp32/cpu --new-variant fp32/cuda.")
@click.option("--allow-preprocessing-change", is_flag=True,
              help="Compare even when the preprocessing differs (the change is printed).")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="Two .onnx files: evaluate both on this ImageFolder or path,label CSV.")
@click.option("--dataset", default=None, help="Two .onnx files: evaluate both on this catalog dataset's test split.")
@click.option("--data-dir", type=click.Path(), default=None, help="Where the catalog dataset is.")
@click.option("--sample/--no-sample", default=None, help="Use the embedded sample of --dataset.")
@click.option("--max-images", type=click.IntRange(1), default=None, help="At most this many test images.")
@click.option("--classes", type=click.Path(), default=None, help="Class names file, one per line (as evaluate).")
@geometry_options
@click.option("--mean", default=None, help="Per-channel mean (as evaluate).")
@click.option("--std", default=None, help="Per-channel std (as evaluate).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="Two .onnx files: the execution provider both run on.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="CPU intra-op threads.")
@click.option("--latency/--no-latency", default=True, help="Two .onnx files: time both in an interleaved A/B.")
@click.option("--blocks", type=click.IntRange(4, 10_000), default=20, show_default=True,
              help="Latency A/B: interleaved block pairs.")
@click.option("--block-calls", type=click.IntRange(1, 100_000), default=25, show_default=True,
              help="Latency A/B: timed calls per block.")
def compare_cmd(base, new, **opts):
    """Compare NEW against BASE on the same images: passed (exit 0), regressed (1) or inconclusive (4).

    BASE and NEW are evaluation folders, run folders or eval.json files (compared from their stored per-image
    predictions), or two .onnx files with --data/--dataset (both evaluated here, and timed in an interleaved A/B).
    Writes compare.md, compare.json and flips.png into --out; --junit FILE for CI; the Markdown is appended to
    $GITHUB_STEP_SUMMARY when it is set. Refuses (exit 2) evaluations of different data, classes or preprocessing.
    """
    from convkit.compare.outputs import terminal_lines

    doc = _run(base, new, opts)
    click.echo("\n".join(terminal_lines(doc)))
    click.echo(f"  → {doc['files']['compare_md']}")
    if doc["exit_code"]:
        raise SystemExit(doc["exit_code"])

"""What a comparison writes: the terminal summary, compare.md and compare.json (atomic), a JUnit XML file (one
test case per check) and, when $GITHUB_STEP_SUMMARY is set, the Markdown summary appended to it; the contact
sheet of the worst flipped images."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from convkit.artifacts import write_artifact
from convkit.atomic import atomic_path, write_text
from convkit.compare.gate import INFO, SKIPPED
from convkit.compare.stats import INCONCLUSIVE, REGRESSED
from convkit.errors import ConvkitError
from convkit.text import cap, md_code, md_text

COMPARE_MD, COMPARE_JSON, SHEET_PNG = "compare.md", "compare.json", "flips.png"
MD_FLIPS = 20  # flipped images listed in compare.md (compare.json lists up to gate.MAX_FLIPS_LISTED)
SHEET_IMAGES = 16
SYMBOL = {"passed": "✅", "regressed": "❌", "inconclusive": "⚠️", SKIPPED: "➖", INFO: "ℹ️"}


def terminal_lines(doc: dict) -> list[str]:
    """Return the terminal summary: the verdict first, then one line per check, then the notes."""
    b, n = doc["base"], doc["new"]
    lines = [f"compare: {doc['verdict'].upper()} (exit {doc['exit_code']}): new {cap(n['input'])} [{n['variant']}] "
             f"vs base {cap(b['input'])} [{b['variant']}] on {doc['data']['n']:,} {cap(doc['data']['dataset'])} images"]
    lines += [f"  {c['verdict']:<12} {c['name']}: {cap(c['summary'], 1000)}" for c in doc["checks"]]
    fl = doc["flips"]
    lines.append(f"  flipped: {fl['lost_count']} images lost (base right, new wrong), {fl['gained_count']} gained")
    lines += [f"  note: {cap(x, 1000)}" for x in doc["notes"]]
    return lines


def markdown(doc: dict, sheet: str | None = None) -> str:
    """Return compare.md (also the job summary): verdict, checks table, worst classes, flipped images, notes;
    every foreign string escaped (convkit.text)."""
    b, n, d = doc["base"], doc["new"], doc["data"]
    out = [f"# convkit compare: {SYMBOL.get(doc['verdict'], '')} {doc['verdict']}", "",
           f"New {md_code(n['input'])} ({md_text(n['variant'])}) against base {md_code(b['input'])} "
           f"({md_text(b['variant'])}) on the same {d['n']:,} images of {md_text(d['dataset'])} (data checksum "
           f"`{md_text(d['checksum'][:16])}`). Accuracy margin {doc['margin_points']:g} points (non-inferiority: "
           f"passed when the 95 % interval of new − base lies above −margin, regressed when it lies below), latency "
           f"margin {doc['latency_margin'] * 100:g} %.", "",
           "| check | verdict | figures |", "|---|---|---|"]
    out += [f"| {md_text(c['name'])} | {SYMBOL.get(c['verdict'], '')} {c['verdict']} | {md_text(c['summary'], 1000)} |"
            for c in doc["checks"]]
    worst = sorted((r for r in doc["per_class"] if r["delta"] < 0), key=lambda r: r["delta"])[:10]
    if worst:
        out += ["", "## Classes with the largest drops", "", "| class | n | base | new | Δ pts | p (Holm) |",
                "|---|---:|---:|---:|---:|---:|"]
        out += [f"| {md_text(r['class'])} | {r['n']} | {r['base'] * 100:.1f} | {r['new'] * 100:.1f} | "
                f"{r['delta'] * 100:+.1f} | {r['p_holm']:.2g} |" for r in worst]
    fl = doc["flips"]
    out += ["", f"## Flipped images: {fl['lost_count']} lost, {fl['gained_count']} gained", ""]
    if fl["lost"]:
        out += ["Lost (base right, new wrong), most confident mistakes first:", "",
                "| image | label | base → new | new confidence |", "|---|---|---|---:|"]
        out += [f"| {md_code(f['image'])} | {md_text(f['label'])} | {md_text(f['base'])} → {md_text(f['new'])} | "
                f"{f['new_confidence']:.2f} |" for f in fl["lost"][:MD_FLIPS]]
        if fl["lost_count"] > MD_FLIPS:
            out.append(f"\n… {fl['lost_count'] - MD_FLIPS} more in compare.json.")
    if sheet:
        out += ["", f"![worst flipped images]({Path(sheet).name})"]
    if doc["notes"]:
        out += ["", "## Notes", ""] + [f"- {md_text(x, 1000)}" for x in doc["notes"]]
    return "\n".join(out) + "\n"


def junit(doc: dict) -> str:
    """Return a JUnit XML document: one <testcase> per check; a regressed check is a <failure>, an inconclusive
    one an <error> (not decided), a skipped one <skipped>; each carries its numbers."""
    checks = doc["checks"]
    suite = ET.Element("testsuite", name="convkit compare", tests=str(len(checks)),
                       failures=str(sum(c["verdict"] == REGRESSED for c in checks)),
                       errors=str(sum(c["verdict"] == INCONCLUSIVE for c in checks)),
                       skipped=str(sum(c["verdict"] == SKIPPED for c in checks)), time="0")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname="convkit.compare", name=c["name"], time="0")
        text = cap(c["summary"], 4000)
        if c["verdict"] == REGRESSED:
            ET.SubElement(case, "failure", message=text, type="regressed").text = text
        elif c["verdict"] == INCONCLUSIVE:
            ET.SubElement(case, "error", message=text, type="inconclusive").text = text
        elif c["verdict"] == SKIPPED:
            ET.SubElement(case, "skipped", message=text)
        ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites", name="convkit compare", tests=suite.get("tests"), failures=suite.get("failures"),
                      errors=suite.get("errors"), skipped=suite.get("skipped"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_all(doc: dict, out_dir: Path, junit_file: Path | None, sheet: str | None) -> dict[str, str]:
    """Write compare.json, compare.md and (asked for) the JUnit file, each atomically, and append the Markdown to
    $GITHUB_STEP_SUMMARY when it is set; returns {what: path}."""
    out_dir = Path(out_dir)
    files = {"compare_md": str(out_dir / COMPARE_MD), "compare_json": str(out_dir / COMPARE_JSON)}
    if sheet:
        files["flips_png"] = sheet
    if junit_file is not None:
        files["junit"] = str(write_text(Path(junit_file), junit(doc)))
    text = markdown(doc, sheet)
    write_text(out_dir / COMPARE_MD, text)
    write_artifact(out_dir / COMPARE_JSON, "compare", {**doc, "files": files})
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:  # appended, as GitHub Actions expects
                fh.write(text.replace(f"![worst flipped images]({SHEET_PNG})", "") + "\n")
        except OSError as exc:
            raise ConvkitError(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror}") from None
        files["job_summary"] = summary
    return files


def contact_sheet(path: Path, doc: dict, images) -> str | None:
    """Draw the worst lost images (most confident new mistakes) with "label: base → new" and write ``path``;
    returns its path, None when there is nothing to draw or no images at hand."""
    lost = doc["flips"]["lost"][:SHEET_IMAGES]
    if not lost or images is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(lost))
    rows = -(-len(lost) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, f in zip(axes.ravel(), lost):
        pixels = load_pixels(images, f["index"])
        if pixels is None:
            continue
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
        title = f"{cap(f['image'], 28)}\n{cap(f['label'], 14)}: {cap(f['base'], 14)} → {cap(f['new'], 14)}"
        ax.set_title(title.replace("$", r"\$"), fontsize=7)
    fig.suptitle("Lost images (base right, new wrong), most confident new mistakes first", fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return str(path)


def load_pixels(images, index: int):
    """Return image ``index`` as HW or HWC uint8 for imshow: from a decoded array [N, C, H, W] (or a lazily decoded
    folder), or a list of file paths read with Pillow; None when it cannot be read."""
    import numpy as np

    try:
        if isinstance(images, list):
            from PIL import Image

            with Image.open(images[index]) as im:
                im.thumbnail((256, 256))
                return np.asarray(im.convert("RGB"))
        x = np.asarray(images[index:index + 1])[0]
        return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    except Exception:  # a figure's image that cannot be read (moved, damaged, too large) is left blank
        return None

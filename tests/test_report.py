"""convkit report: receptive fields, calibration, and the report built from real (tiny) training runs."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from matplotlib.image import imread

from convkit import artifacts as A
from convkit.calibration import calibration_bins
from convkit.models import create_model, get_model_config
from convkit.report.build import build_report
from convkit.report.receptive_field import receptive_fields
from convkit.suite import SUITES


# ---- receptive fields ---------------------------------------------------------------------------------------------
def test_receptive_field_hand_computed():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 3, padding=1))
    rows = receptive_fields(model)
    assert [r["rf"] for r in rows] == [3, 5, 6, 10]
    assert [r["jump"] for r in rows] == [1, 1, 2, 2]
    assert [r["layer"] for r in rows] == ["0", "2", "4", "5"]


def test_receptive_field_dilation_and_residual_union():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=2, dilation=2)  # rf 5
            self.b = nn.Conv2d(1, 1, 1)  # rf 1

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = nn.Sequential(Block(), nn.Conv2d(1, 1, 3, padding=1))
    assert [r["rf"] for r in receptive_fields(model)] == [5, 1, 7]


def _positive_copy(model: nn.Module) -> nn.Module:
    """The model with every weight a positive constant (1/fan-in), ReLUs out of place, max-pools as avg-pools.

    With an all-ones input every activation is then positive, so the input gradient of one output unit is
    non-zero exactly on the pixels that unit can see. Max-pool gradients reach one pixel per window only,
    hence the same-geometry average pool.
    """
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        if hasattr(m, "inplace"):
            m.inplace = False
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.constant_(m.weight, 1.0 / (m.weight[0].numel()))
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)
    return model.eval()


def _empirical_extents(model: nn.Module, shape) -> dict[str, tuple[int, int, int]]:
    """Return {conv name: (lo, hi, centre index)}: rows of the input whose gradient is non-zero for the centre unit."""
    outs = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outs.__setitem__(n, out))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    x = torch.ones(1, *shape, requires_grad=True)
    model(x)
    for h in hooks:
        h.remove()
    found = {}
    for name, out in outs.items():
        c = out.shape[-1] // 2
        (g,) = torch.autograd.grad(out[0, :, c, c].sum(), x, retain_graph=True)
        rows = torch.nonzero(g[0].abs().sum(dim=(0, 2)) > 0).flatten()
        found[name] = (int(rows.min()), int(rows.max()), c)
    return found


def _conv_models() -> list[str]:
    names = sorted({e.model for e in SUITES["seed"]} | {e.model for e in SUITES["kernel-eq"]})
    return [n for n in names if any(isinstance(m, nn.Conv2d) for m in create_model(n).modules())]


@pytest.mark.parametrize("model_name", _conv_models())
def test_receptive_field_matches_gradient(model_name):
    torch.manual_seed(0)
    model = _positive_copy(create_model(model_name))
    shape = get_model_config(model_name).input_shape
    size = shape[-1]
    rows = {r["layer"]: r for r in receptive_fields(model)}
    found = _empirical_extents(model, shape)
    assert found and set(found) <= set(rows)
    for name, (lo, hi, c) in found.items():
        r = rows[name]
        if r["global_context"]:
            want = (0, size - 1)  # a squeeze-excitation gate sees the whole image
        else:
            centre = r["start"] + c * r["jump"]
            want = (max(0, int(np.ceil(centre - (r["rf"] - 1) / 2))), min(size - 1, int(centre + (r["rf"] - 1) / 2)))
        assert (lo, hi) == want, f"{model_name} {name}: gradient rows {lo}..{hi}, analytic {want} (rf {r['rf']})"


# ---- calibration --------------------------------------------------------------------------------------------------
def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.62, 0.38], [0.2, 0.8], [0.05, 0.95], [0.51, 0.49]])
    labels = np.array([0, 1, 1, 1, 0])
    out = calibration_bins(probs, labels, n_bins=15)
    # one image per bin: 0.51 right, 0.62 wrong, 0.8 right, 0.9 right, 0.95 right
    want = (0.49 + 0.62 + 0.2 + 0.1 + 0.05) / 5
    assert out["ece"] == pytest.approx(want)
    assert len(out["bins"]) == 15 and sum(b["count"] for b in out["bins"]) == 5
    top = out["bins"][-2]  # (0.8667, 0.9333]
    assert top["count"] == 1 and top["confidence"] == pytest.approx(0.9)


def test_ece_softmaxes_logits():
    logits = np.log(np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert calibration_bins(logits, [0, 0])["ece"] == pytest.approx(calibration_bins(np.exp(logits), [0, 0])["ece"])
    assert calibration_bins(np.array([[0.0, 0.0]]), [0])["ece"] == pytest.approx(0.5)


# ---- the report from real runs ----------------------------------------------------------------------------------
class _ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def _html_images(path: Path) -> list[str]:
    parser = _ImageSources()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.sources


def _figure_bytes(suite: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((suite / A.REPORT_DIR).glob("*.png"))}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A seed suite folder with two real 1-epoch runs: t1-simple-cnn exported (fp32 + int8) and evaluated,
    t1-fcn trained only."""
    from conftest import train_sample_run

    from convkit.evaluate.options import EvalOptions, ProviderOptions, TimingOptions
    from convkit.evaluate.run import evaluate_model
    from convkit.export.pipeline import export_run

    out = tmp_path_factory.mktemp("runs")
    cnn = train_sample_run(out, "t1-simple-cnn")
    train_sample_run(out, "t1-fcn")
    export_run(cnn, precisions=("int8",), n_images=200, calib_images=64,
               max_acc_drop={"fp32": 0.1, "fp16": 0.3, "int8": 100.0})  # 1-epoch models: int8 gate loosened
    evaluate_model(cnn, EvalOptions(providers=ProviderOptions(provider="cpu", threads=1),
                                    timing=TimingOptions(warmup=1, runs=3, min_seconds=0.0, batch_sizes=(1,),
                                                         pytorch_latency=False),
                                    max_accuracy_drop={"fp32": 0.1, "fp16": 0.3, "int8": 100.0}))
    return cnn.parent


def test_report_from_real_runs(suite):
    result = build_report(suite)
    md = (suite / A.REPORT_MD).read_text(encoding="utf-8")
    assert result["md"] == suite / A.REPORT_MD and result["runs"] == 2
    assert "## Table 1 — MNIST" in md and "## Table 2" not in md
    # the study's value beside convkit's, and rows without a run say so
    assert "98.34 %" in md and "99.40 %" in md and "`t1-residual-cnn` (no run)" in md
    assert "no convolution" in md  # t1-fcn is an MLP
    assert "t1-simple-cnn-conv1.png" in md and "t1-simple-cnn-calibration.png" in md
    ev = json.loads((suite / "t1-simple-cnn" / "eval.json").read_text())
    ece = ev["accuracy"][0]["calibration"]["ece"]
    assert 0.0 <= ece <= 1.0 and f"{ece:.3f}" in md
    # report.md escapes brackets (Markdown), so the interval reads \[low, high\] in the source
    assert re.search(r"int8 − fp32 accuracy and batch-1 speed-up: Simple CNN [+-]\d+\.\d\d \\?\[[+-]\d+\.\d\d, "
                     r"[+-]\d+\.\d\d\\?\] pts, p = \S+, (real|within noise), \d+\.\d\d× \(no interval\)", md)
    # the int8 delta's exact McNemar p-value, recomputed here from the discordant counts eval.json records
    test = next(a for a in ev["accuracy"] if a["precision"] == "int8")["vs_fp32"]
    b, c = test["only_candidate_right"], test["only_base_right"]
    p = 1.0 if b + c == 0 else min(1.0, 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c))
    assert test["p_value"] == pytest.approx(p) and test["distinguishable"] is (p < 0.05)
    # every image of report.md exists; report.html embeds the same images as valid PNG data URIs
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert refs and all((suite / r).is_file() for r in refs)
    sources = _html_images(suite / A.REPORT_HTML)
    assert len(sources) == len(refs)
    for src, ref in zip(sources, refs):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True) == (suite / ref).read_bytes()
    page = (suite / A.REPORT_HTML).read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time


def test_report_is_deterministic(suite):
    build_report(suite)
    first_md, first_png = (suite / A.REPORT_MD).read_bytes(), _figure_bytes(suite)
    build_report(suite)
    assert (suite / A.REPORT_MD).read_bytes() == first_md
    assert _figure_bytes(suite) == first_png and len(first_png) >= 8


def test_report_on_a_partial_tree(suite, tmp_path):
    """A run without eval.json or grad_norms.csv, a damaged metrics.json and one trained where its data is not."""
    part = tmp_path / "seed-sample"
    shutil.copytree(suite, part)
    cnn = part / "t1-simple-cnn"
    for name in (A.EvalNames(A.EVAL_PREFIX).json, A.GRAD_NORMS, A.EvalNames(A.EVAL_PREFIX).confusion("", "csv")):
        (cnn / name).unlink()
    (part / "t1-fcn" / A.METRICS).write_text("{not json")
    early = part / "t1-residual-cnn"  # failed before its first checkpoint: a config and nothing else
    early.mkdir()
    shutil.copy(part / "t1-fcn" / A.CONFIG, early / A.CONFIG)
    cfg = json.loads((early / A.CONFIG).read_text())
    cfg["config"].update(experiment="t1-residual-cnn", model="residual_cnn_mnist")
    (early / A.CONFIG).write_text(json.dumps(cfg))
    ckpt = torch.load(cnn / A.CHECKPOINT, weights_only=True)  # as if trained on full data elsewhere
    ckpt["config"].update(sample=False, data_dir=str(tmp_path / "elsewhere"))
    torch.save(ckpt, cnn / A.CHECKPOINT)
    build_report(part)
    md = (part / A.REPORT_MD).read_text(encoding="utf-8")
    section = md.split("### t1-simple-cnn")[1]
    assert "Confusion matrix: not measured" in section and "Gradient flow: not measured" in section
    assert "Reliability diagram: not measured" in section and "First convolution: not measured" in section
    assert "t1-simple-cnn-curves.png" in section  # what is there still renders
    assert "unreadable:" in md.split("### t1-fcn")[1]
    assert not (part / A.REPORT_DIR / "t1-simple-cnn-confusion.png").exists()  # stale figure removed
    early_section = md.split("### t1-residual-cnn")[1]
    assert "Learning curves: not measured" in early_section and "First convolution: not measured" in early_section
    assert "`t1-residual-cnn` (no run)" not in md


def test_report_cli(suite, tmp_path):
    from convkit.cli import main

    r = CliRunner().invoke(main, ["report", str(suite)])
    assert r.exit_code == 0, r.output
    assert "2 run(s)" in r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "no run directories" in r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path / "absent")])
    assert r.exit_code == 2 and "not found" in r.output


_COUNT_IMAGES = ('<script>window.addEventListener("load", () => {const i = Array.from(document.images); '
                 'document.body.dataset.images = i.filter(x => x.complete && x.naturalWidth > 0).length + "/" + '
                 'i.length;});</script></body>')


def _chromium(*args: str) -> str:
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                         check=True, capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (.ci/run installs it)")
def test_report_html_renders_in_chromium(suite, tmp_path):
    """Headless chromium draws the page and decodes every embedded figure (a broken one has naturalWidth 0)."""
    build_report(suite)
    page = suite / A.REPORT_HTML
    shot = tmp_path / "report.png"
    _chromium("--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    assert imread(shot).shape[:2] == (2400, 1280)
    probe = tmp_path / "probe.html"  # the page plus a script counting decoded images after "load"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _COUNT_IMAGES), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    n = len(_html_images(page))
    assert n > 5 and f'data-images="{n}/{n}"' in dom

"""The report for every kind of folder (issue 31): a user model's folder made with `export --model` gets accuracy,
cost, latency and recommendation sections; its figures carry intervals and readable log axes; kernel-size rows
show the k×k convolution they are about."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import numpy as np
import pytest
import torch.nn as nn
from click.testing import CliRunner

from convkit.cli import main
from convkit.models import create_model
from convkit.report import figures as F
from convkit.report.internals import row_conv, row_kernel

NET = textwrap.dedent('''
    import torch
    import torch.nn as nn


    def build(num_classes=10):
        torch.manual_seed(0)  # the same weights whenever it is built: export and evaluate's reference agree
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                             nn.Linear(8 * 8 * 8, num_classes))
''')


def _cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user model's folder: `export --model pkg:build --precision int8` on the CIFAR-10 sample, then evaluated."""
    root = tmp_path_factory.mktemp("h31user")
    (root / "report_net").mkdir()
    (root / "report_net" / "__init__.py").write_text(NET)
    sys.path.insert(0, str(root))
    out = root / "suite" / "mine"
    try:
        code, text = _cli("export", "--model", "report_net:build", "--dataset", "cifar10", "--sample", "--out", out,
                          "--precision", "int8", "--n-images", "200")
        assert code == 0, text
        code, text = _cli("evaluate", out, "--provider", "cpu", "--threads", "1", "--batch-sizes", "1,8",
                          "--runs", "20", "--warmup", "2", "--min-seconds", "0")
        assert code in (0, 1), text  # 1: a gate; the folder is still evaluated
        yield out
    finally:
        sys.path.remove(str(root))


@pytest.mark.parametrize("where", ["folder", "parent"])
def test_report_on_a_user_model_folder_shows_what_eval_json_holds(user_folder, where):
    target = user_folder if where == "folder" else user_folder.parent
    code, text = _cli("report", target)
    assert code == 0, text
    md = (target / "report.md").read_text()
    ev = json.loads((user_folder / "eval.json").read_text())
    assert "suite `unknown`" not in md
    # accuracy with intervals, for every precision of eval.json
    for a in ev["accuracy"]:
        lo, hi = a["accuracy_ci"]
        assert re.search(rf"\| {a['precision']} \| cpu \| {a['accuracy']:.4f} \\\[{lo:.4f}, {hi:.4f}\\\]", md), md
    assert "| precision | provider | file size |" in md  # per-precision cost
    size = ev["variants"]["int8"]["size_bytes"] / 1e6
    assert f"| int8 | cpu | {size:.2f} MB |" in md
    # the latency table: every ORT row, its throughput = batch ÷ p50
    for r in (r for r in ev["latency"] if not r["backend"].startswith("torch-")):
        assert f"| {r['precision']} | cpu | ort | {r['batch']} | {r['p50_ms']:.3f}" in md
        assert f"{r['batch'] * 1e3 / r['p50_ms']:,.0f}" in md
    rec = ev["recommendation"]
    assert f"latency bound: p99 ≤ {rec['latency_bound_ms']:g} ms ({rec['latency_bound_source']})" in md
    assert rec["text"] in md.replace("\\[", "[").replace("\\]", "]")
    assert "throughput and p50 per batch size" in md.lower()
    # nothing missing because of an exception (the default_cfg.dataset AttributeError of user models)
    assert not re.search(r"not measured \([A-Za-z]*(Error|Exception)", md), md
    assert "could not be read" not in md
    assert "![First convolution]" in md


def _capture(monkeypatch):
    figs = []
    monkeypatch.setattr(F, "save", lambda fig, path: figs.append(fig) or path)
    return figs


def test_throughput_figure_has_intervals_batch_ticks_and_hollow_unstable(monkeypatch, tmp_path):
    figs = _capture(monkeypatch)
    rows = [{"precision": "fp32", "provider": "cpu", "backend": "ort", "batch": b, "p50_ms": ms,
             "p50_ci_ms": [ms * 0.95, ms * 1.05], "p50_ci_pair_ms": [ms * 0.94, ms * 1.06],
             "unstable": "p90/p50 2 > 1.5" if b == 8 else None} for b, ms in ((1, 0.5), (8, 2.0), (64, 12.0))]
    F.throughput_vs_batch(rows, "t", tmp_path / "x.png")
    ax_t, ax_p = figs[0].axes
    assert list(ax_t.get_xticks()) == [1, 8, 64]
    faces = {}
    for line in ax_t.get_lines():
        x = line.get_xdata()
        if len(x) == 1 and line.get_marker() == "o":  # the point itself, not its interval's caps
            faces[int(x[0])] = line.get_markerfacecolor()
    assert faces[8] == "none" and faces[1] != "none" and faces[64] != "none"
    # throughput interval bars: batch ÷ the p50's 97.5 % interval ends
    segs = [c for c in ax_t.collections if c.get_segments()]
    ys = sorted((float(s[0][1]), float(s[1][1])) for c in segs for s in c.get_segments())
    expected = sorted((b * 1e3 / (ms * 1.06), b * 1e3 / (ms * 0.94)) for b, ms in ((1, 0.5), (8, 2.0), (64, 12.0)))
    assert np.allclose(sorted(tuple(sorted(y)) for y in ys), expected)


def test_latency_vs_accuracy_short_log_range_has_real_ticks_and_bars(monkeypatch, tmp_path):
    figs = _capture(monkeypatch)
    pts = {"cpu": [("mine", "fp32", 0.81, 0.437, [0.80, 0.83], [0.40, 0.47], None),
                   ("mine", "int8", 0.62, 0.436, [0.60, 0.70], [0.40, 0.47], "std/mean 0.9 > 0.5")]}
    F.latency_vs_accuracy(pts, tmp_path / "x.png")
    ax = figs[0].axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 2  # a log axis spanning less than a decade still gets labelled ticks
    labels = [ax.xaxis.get_major_formatter()(t) for t in ticks]
    assert all(labels)
    ylo, yhi = ax.get_ylim()
    assert ylo <= 0.40 and yhi >= 0.47  # the accuracy intervals are drawn, so the axis spans them
    hollow = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "none" and ln.get_marker() in ("o", "^")]
    assert len(hollow) == 1 and np.allclose(hollow[0].get_xdata(), [0.62])


@pytest.mark.parametrize("name, kernel", [("kernel_cnn_k3", 3), ("kernel_cnn_k5", 5), ("kernel_cnn_k7", 7),
                                          ("kernel_cnn_k1x3", 1), ("kernel_eq_k5", 5)])
def test_kernel_rows_show_their_kxk_convolution(name, kernel):
    model = create_model(name)
    assert row_kernel(name) == kernel
    layer, conv = row_conv(model, row_kernel(name))
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    stem = convs[0][0]
    assert tuple(conv.kernel_size) == (kernel, kernel) and layer != stem
    # the first such convolution after the stem, in the order the network runs them
    assert layer == next(n for n, m in convs[1:] if m.kernel_size == (kernel, kernel))
    assert row_kernel("regularized_residual_cnn") is None
    assert row_conv(model, None)[0] == stem  # other models: the first convolution, as before

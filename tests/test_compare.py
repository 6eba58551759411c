"""`convkit compare`: the paired statistics against math + scipy, the predictions file, planted flips → verdicts and
exit codes, refusals, JUnit and the job summary, and one end-to-end comparison of two ONNX files made here."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from convkit.artifacts import write_artifact
from convkit.cli import main
from convkit.compare import latency_ab
from convkit.compare.stats import ece_change, holm, non_inferiority
from convkit.errors import ConvkitError
from convkit.evaluate import predictions as pf
from convkit.evaluate.result import EvalResult

Z95 = 1.959963984540054
CLASSES = [f"c{i}" for i in range(10)]
PRE = {"layout": "nchw", "image_shape_chw": [3, 8, 8], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
       "input_range": "1", "channel_order": "rgb", "flattened_input": False}


# ---- independent computations ----------------------------------------------------------------------------------
def agresti_min(b: int, c: int, n: int) -> tuple[float, float]:
    """Agresti & Min (2005): Wald interval of (b − c)/n with half an image added to each discordant cell."""
    b, c, n = b + 0.5, c + 0.5, n + 2
    d = (b - c) / n
    half = Z95 * math.sqrt(b + c - (b - c) ** 2 / n) / n
    return d - half, d + half


def verdict_by_hand(b: int, c: int, n: int, margin: float) -> str:
    low, high = agresti_min(b, c, n)
    return "passed" if low >= -margin else "regressed" if high < -margin else "inconclusive"


def ece_by_loops(conf, ok, bins=15) -> float:
    """ECE = Σ_b (count_b / N)·|acc_b − conf_b| over equal-width bins (lo, hi], written out with loops."""
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        idx = [i for i, x in enumerate(conf) if (lo < x <= hi) or (k == 0 and x == 0)]
        if idx:
            total += len(idx) / len(conf) * abs(np.mean([ok[i] for i in idx]) - np.mean([conf[i] for i in idx]))
    return total


# ---- planted predictions ---------------------------------------------------------------------------------------
def planted(n: int = 10_000, wrong: int = 0, seed: int = 0, base_acc: float = 0.9):
    """Return (base, new) Predictions of the same images: base right on ``base_acc`` of them; new is base with
    ``wrong`` of base's right images turned wrong (top-1 → the next class, label out of the top 5)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    right = rng.random(n) < base_acc
    top1 = np.where(right, labels, (labels + 1) % 10)
    flip = rng.choice(np.flatnonzero(right), wrong, replace=False)
    new_top1 = top1.copy()
    new_top1[flip] = (labels[flip] + 1) % 10
    probs = np.tile(np.float16([0.6, 0.2, 0.1, 0.05, 0.05]), (n, 1))
    conf = rng.uniform(0.3, 0.99, n).astype(np.float16)
    probs[:, 0] = conf

    def preds(t1):
        ids = ((t1[:, None] + np.arange(5)[None, :]) % 10).astype(np.uint16)
        variants = {"fp32/cpu": pf.VariantPredictions(ids, probs)}
        return pf.Predictions(labels, CLASSES, "sum-a", "planted", dict(PRE), variants)

    return preds(top1), preds(new_top1)


def stored(folder: Path, preds: pf.Predictions, created: str = "2026-01-01T00:00:00+00:00", **sections) -> Path:
    """Write a stored evaluation (eval.json + predictions) as `convkit evaluate` leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    preds.created = created
    path = pf.write(folder / pf.file_name("eval"), preds)
    doc = {"created": created, "input": "m.onnx", "variants": {"fp32": {"sha256": "0" * 64}},
           "files": {"predictions": str(path)}, **sections}
    write_artifact(folder / "eval.json", "eval", EvalResult.from_json(doc).to_json())
    return folder


def compare(*args):
    res = CliRunner().invoke(main, ["compare", *[str(a) for a in args]], catch_exceptions=False)
    return res, res.output  # stdout and stderr together (click ≥ 8.2)


# ---- statistics ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b,c,n,margin", [(0, 40, 10_000, 0.002), (0, 5, 10_000, 0.002), (0, 3, 300, 0.002),
                                          (12, 30, 2_000, 0.01), (7, 2, 500, 0.0)])
def test_non_inferiority_matches_agresti_min_and_exact_binomial(b, c, n, margin):
    base = np.zeros(n, bool)
    new = np.zeros(n, bool)
    base[:c] = True  # only base right
    new[c:c + b] = True  # only new right
    base[c + b:c + b + n // 2] = new[c + b:c + b + n // 2] = True
    ni = non_inferiority(base, new, margin)
    low, high = agresti_min(b, c, n)
    assert ni.test.delta_interval.low == pytest.approx(low, abs=1e-12)
    assert ni.test.delta_interval.high == pytest.approx(high, abs=1e-12)
    assert ni.test.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    assert ni.verdict == verdict_by_hand(b, c, n, margin)
    if ni.verdict == "inconclusive":  # n ≥ z²·(p_b + p_c − δ²)/(δ + margin)², the adjusted rates as observed
        bb, cc, nn = b + 0.5, c + 0.5, n + 2
        d = (bb - cc) / nn
        assert ni.images_needed == math.ceil(Z95 ** 2 * ((bb + cc) / nn - d * d) / (d + margin) ** 2)
        assert ni.images_needed > n
    else:
        assert ni.images_needed is None


def test_holm_matches_the_step_down_definition():
    # Holm (1979): sorted p(1..m) → max_{j ≤ i} min(1, (m − j + 1)·p(j)); written out for this example
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_ece_change_and_its_interval():
    rng = np.random.default_rng(1)
    n = 400
    conf_a, conf_b = rng.uniform(0.2, 1, n), rng.uniform(0.2, 1, n)
    ok_a, ok_b = rng.random(n) < conf_a, rng.random(n) < conf_b * 0.7  # new over-confident
    ch = ece_change(conf_a, ok_a, conf_b, ok_b, resamples=400)
    assert ch.base == pytest.approx(ece_by_loops(conf_a, ok_a), abs=1e-12)
    assert ch.new == pytest.approx(ece_by_loops(conf_b, ok_b), abs=1e-12)
    # an independent paired bootstrap with numpy: its interval and ours agree to within resampling noise
    draws = np.random.default_rng(9).integers(0, n, (300, n))
    boot = [ece_by_loops(conf_b[d], ok_b[d]) - ece_by_loops(conf_a[d], ok_a[d]) for d in draws[:150]]
    low, high = np.percentile(boot, [2.5, 97.5])
    assert ch.delta_ci[0] < ch.delta < ch.delta_ci[1]
    assert ch.delta_ci[0] == pytest.approx(low, abs=0.03) and ch.delta_ci[1] == pytest.approx(high, abs=0.03)


def test_latency_ab_interval_covers_a_planted_ratio():
    rng = np.random.default_rng(2)
    base = rng.lognormal(0, 0.1, (20, 25))
    new = rng.lognormal(0, 0.1, (20, 25)) * 1.3
    timing = latency_ab.AbTiming(blocks=20, calls=25, resamples=500)
    r = latency_ab.ratio(base, new, 50, timing)
    assert r["ratio"] == pytest.approx(np.median(new) / np.median(base))
    assert r["ratio_ci"][0] < 1.3 < r["ratio_ci"][1] and r["ratio_ci"][0] > 1.05
    assert latency_ab.judge(r["ratio_ci"], 0.05) == "regressed"
    assert latency_ab.judge([0.95, 1.04], 0.05) == "passed" and latency_ab.judge([0.98, 1.2], 0.05) == "inconclusive"


# ---- the predictions file ----------------------------------------------------------------------------------------
def test_predictions_round_trip_and_size(tmp_path):
    base, _ = planted(2000)
    base.image_paths = [f"dog/ünï {i}.png" for i in range(2000)]
    base.created = "t1"
    back = pf.read(pf.write(tmp_path / "eval.predictions.npz", base))
    assert back.image_paths == base.image_paths and back.class_names == CLASSES and back.created == "t1"
    assert np.array_equal(back.labels, base.labels) and back.preprocessing == PRE
    v, w = back.variants["fp32/cpu"], base.variants["fp32/cpu"]
    assert np.array_equal(v.top_ids, w.top_ids) and np.array_equal(v.top_probs, w.top_probs)
    # scores → top-5 ids and softmax probabilities, checked against numpy
    scores = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
    ids, probs = pf.top_k(scores)
    soft = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    assert np.array_equal(ids, np.argsort(-scores, 1)[:, :5])
    assert np.allclose(probs, np.sort(soft, 1)[:, ::-1][:, :5], atol=1e-3)


def test_predictions_reading_refuses_foreign_and_damaged_files(tmp_path, monkeypatch):
    bad = tmp_path / "x.predictions.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConvkitError, match="damaged"):
        pf.read(bad)
    np.savez(bad, header=np.frombuffer(b'{"schema": "other/1"}', np.uint8))
    with pytest.raises(ConvkitError, match="not a convkit predictions file"):
        pf.read(bad)
    with open(bad, "wb") as fh:  # an object array would need pickle: never loaded
        np.savez(fh, header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConvkitError):
        pf.read(bad)
    monkeypatch.setattr(pf, "MAX_MEMBER_BYTES", 10_000)  # a zip bomb: refused before inflating
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("header.npy", b"\0" * 10_001)
    with pytest.raises(ConvkitError, match="oversized"):
        pf.read(bad)


# ---- planted verdicts through the CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("wrong,code,verdict", [(40, 1, "regressed"), (5, 0, "passed")])
def test_planted_flips_give_the_verdict(tmp_path, wrong, code, verdict):
    base, new = planted(10_000, wrong)
    b, n = stored(tmp_path / "base", base), stored(tmp_path / "new", new, created="t2")
    res, out = compare(b, n, "--margin", 0.2, "--out", tmp_path / "out", "--junit", tmp_path / "j.xml")
    assert res.exit_code == code, out
    assert verdict_by_hand(0, wrong, 10_000, 0.002) == verdict  # the expectation, by hand
    assert out.startswith(f"compare: {verdict.upper()}")
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    top1 = doc["checks"][0]
    assert (top1["only_base_right"], top1["only_candidate_right"], top1["verdict"]) == (wrong, 0, verdict)
    assert doc["flips"]["lost_count"] == wrong and len(doc["flips"]["lost"]) == wrong
    assert doc["flips"]["lost"][0]["image"] == f"planted test #{doc['flips']['lost'][0]['index']}"
    assert "latency" in out and "skipped" in out  # stored evaluations without latency: said, not gated
    # JUnit: parsed, counts consistent with the cases, the failure carries the numbers
    root = ET.parse(tmp_path / "j.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(doc["checks"])
    for kind, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        assert int(suite.get(attr)) == sum(c.find(kind) is not None for c in cases)
    failed = [c for c in cases if c.find("failure") is not None]
    if verdict == "regressed":
        names = {c.get("name") for c in failed}
        assert "top-1 accuracy" in names
        msg = next(c for c in failed if c.get("name") == "top-1 accuracy").find("failure").get("message")
        assert "90." in msg and f"{wrong} images only base right" in msg and "−0.2 pts" in msg
    else:
        assert not failed


def test_tiny_data_is_inconclusive_with_the_images_needed(tmp_path):
    base, new = planted(300, 3, seed=4)
    b, n = stored(tmp_path / "base", base), stored(tmp_path / "new", new, created="t2")
    res, out = compare(b, n, "--margin", 0.2, "--out", tmp_path / "out")
    assert res.exit_code == 4, out
    bb, cc, nn = 0.5, 3.5, 302
    d = (bb - cc) / nn
    needed = math.ceil(Z95 ** 2 * ((bb + cc) / nn - d * d) / (d + 0.002) ** 2)
    assert f"about {needed:,} images would decide it" in out


def test_flips_in_one_class_are_found_after_holm(tmp_path):
    base, new = planted(2000, 0, seed=5)
    v = new.variants["fp32/cpu"]
    ids = v.top_ids.copy()
    right3 = np.flatnonzero((base.labels == 3) & (ids[:, 0] == 3))[:30]
    ids[right3] = (ids[right3] + 1) % 10  # 30 images of class 3 turned wrong, nothing else
    new.variants["fp32/cpu"] = pf.VariantPredictions(ids, v.top_probs)
    b, n = stored(tmp_path / "base", base), stored(tmp_path / "new", new, created="t2")
    res, out = compare(b, n, "--margin", 0.5, "--out", tmp_path / "o")
    doc = json.loads((tmp_path / "o" / "compare.json").read_text())
    rows = {r["class"]: r for r in doc["per_class"]}
    # exact McNemar on class 3: 2 · 0.5³⁰; Holm multiplies the smallest of the 10 classes' p-values by 10
    assert rows["c3"]["p_holm"] == pytest.approx(10 * 2 * 0.5 ** 30, rel=1e-9)
    assert rows["c3"]["delta"] == pytest.approx(-30 / int((base.labels == 3).sum()))
    assert [r["p_holm"] for c, r in rows.items() if c != "c3"] == [1.0] * 9
    per_class_check = next(c for c in doc["checks"] if c["name"] == "per-class recall")
    assert per_class_check["verdict"] == "regressed" and per_class_check["regressed_classes"] == ["c3"]
    assert res.exit_code == 1 and "c3 -" in out


def test_variants_of_one_evaluation_are_compared_by_name(tmp_path):
    base, new = planted(3000, 40, seed=6)
    both = pf.Predictions(base.labels, CLASSES, "sum-a", "planted", dict(PRE),
                          {"fp32/cpu": base.variants["fp32/cpu"], "int8/cpu": new.variants["fp32/cpu"]})
    run = stored(tmp_path / "run", both)
    res, out = compare(run, run, "--variant", "fp32", "--new-variant", "int8", "--margin", 0.2, "--out", tmp_path / "o")
    assert res.exit_code == 1 and "new " in out and "[int8/cpu] vs base" in out and "[fp32/cpu]" in out
    assert "40 images only base right" in out
    res, out = compare(run, run, "--variant", "fp16", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no predictions of 'fp16'" in out and "fp32/cpu, int8/cpu" in out


def test_refusals_other_data_classes_preprocessing(tmp_path):
    base, new = planted(500, 0)
    b = stored(tmp_path / "base", base)
    other = planted(500, 0)[1]
    other.data_checksum = "sum-b"
    res, out = compare(b, stored(tmp_path / "data", other), "--out", tmp_path / "o")
    assert res.exit_code == 2 and "different data" in out and len(out.strip().splitlines()) == 1
    renamed = planted(500, 0)[1]
    renamed.class_names = CLASSES[:9] + ["zebra"]
    res, out = compare(b, stored(tmp_path / "classes", renamed), "--out", tmp_path / "o")
    assert res.exit_code == 2 and "different class lists" in out and "index 9" in out
    moved = planted(500, 0)[1]
    moved.preprocessing = {**PRE, "mean": [0.485, 0.456, 0.406]}
    p = stored(tmp_path / "pre", moved)
    res, out = compare(b, p, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "different preprocessing (mean" in out and "--allow-preprocessing-change" in out
    assert not (tmp_path / "o").exists()  # nothing written
    res, out = compare(b, p, "--out", tmp_path / "o", "--allow-preprocessing-change")
    assert res.exit_code == 0 and "preprocessing changed (allowed by --allow-preprocessing-change): mean" in out
    # one .onnx file and one evaluation, or --data with stored evaluations: refused, one line
    (tmp_path / "m.onnx").write_bytes(b"x")
    res, out = compare(tmp_path / "m.onnx", b, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "not one of each" in out and len(out.strip().splitlines()) == 1
    res, out = compare(b, b, "--dataset", "cifar10", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "stored evaluations carry their own data" in out
    # an evaluation whose outputs were degenerate has nothing to compare: exit 4, one line
    d = stored(tmp_path / "degenerate", planted(500, 0)[1], accuracy=[
        {"precision": "fp32", "provider": "cpu", "degenerate": "output 'y' holds NaN or Inf for 500 of 500 images"}])
    res, out = compare(b, d, "--out", tmp_path / "o")
    assert res.exit_code == 4 and "outputs degenerate" in out and len(out.strip().splitlines()) == 1
    # a predictions file of another evaluation than its eval.json
    (tmp_path / "pre" / "eval.predictions.npz").replace(tmp_path / "x.npz")
    stored(tmp_path / "tmp2", moved, created="other")
    (tmp_path / "tmp2" / "eval.predictions.npz").replace(tmp_path / "pre" / "eval.predictions.npz")
    res, out = compare(b, p, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "belongs to another evaluation" in out


def test_job_summary_only_when_the_variable_is_set(tmp_path, monkeypatch):
    base, new = planted(1000, 0)
    base.class_names = new.class_names = CLASSES[:9] + ["<img src=x onerror=alert(1)>"]
    b, n = stored(tmp_path / "base", base), stored(tmp_path / "new", new, created="t2")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    res, out = compare(b, n, "--out", tmp_path / "o1")
    assert res.exit_code == 0, out
    assert not (tmp_path / "summary.md").exists()
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    res, out = compare(b, n, "--out", tmp_path / "o2")
    text = summary.read_text()
    assert text.startswith("earlier step\n# convkit compare: ✅ passed") and "| top-1 accuracy | ✅ passed |" in text
    assert "<img" not in text and (tmp_path / "o2" / "compare.md").read_text() in text


def test_report_shows_a_comparison_kept_in_the_suite_folder(tmp_path):
    from convkit.report import comparison
    from convkit.report.doc import to_html, to_markdown

    base, new = planted(2000, 30)
    b, n = stored(tmp_path / "evals" / "base", base), stored(tmp_path / "evals" / "<b>new`x", new, created="t2")
    suite = tmp_path / "suite"
    res, out = compare(b, n, "--margin", 0.2, "--out", suite / "compare")
    assert res.exit_code == 1, out
    assert comparison.blocks(tmp_path / "evals") == []  # no comparison there: no section
    md = to_markdown(comparison.blocks(suite))
    assert md.startswith("## Comparison: regressed (`compare/`)")
    assert "| top-1 accuracy | regressed |" in md and "30 images only base right" in md
    assert md.count("<b>") == 1 and "/<b>new'x` (fp32/cpu)" in md  # the folder name: in a code span, as text
    html = to_html(comparison.blocks(suite), suite, "r")
    assert "<b>new" not in html
    (suite / "compare" / "compare.json").write_text('{"schema": "convkit.compare/9"}')
    assert "not shown" in to_markdown(comparison.blocks(suite))


def _latency_row(p50, ci, p99):
    return {"precision": "fp32", "provider": "cpu", "backend": "ort", "batch": 1, "p50_ms": p50, "p50_ci_pair_ms": ci,
            "p99_ms": p99, "unstable": None}


def test_stored_latency_only_on_matching_hardware(tmp_path):
    base, new = planted(1000, 0)
    hw, prov = {"cpu": "Xeon", "cpu_physical_cores": 2}, {"used": ["cpu"], "options": {"cpu": {"threads": 2}}}
    b = stored(tmp_path / "base", base, hardware=hw, providers=prov, latency=[_latency_row(1.0, [0.95, 1.05], 2.0)])
    n = stored(tmp_path / "new", new, created="t2", hardware=hw, providers=prov,
               latency=[_latency_row(1.5, [1.42, 1.58], 2.2)])
    res, out = compare(b, n, "--out", tmp_path / "o")
    assert res.exit_code == 1, out  # [1.42 / 1.05, 1.58 / 0.95] = [1.352, 1.663] lies above 1.05
    p50 = json.loads((tmp_path / "o" / "compare.json").read_text())["checks"][4]
    assert p50["verdict"] == "regressed" and p50["ratio_ci"] == pytest.approx([1.42 / 1.05, 1.58 / 0.95])
    assert "×1.100 (no interval from stored figures: reported, not gated)" in out
    other = stored(tmp_path / "other", planted(1000, 0)[1], created="t3", hardware={**hw, "cpu": "EPYC"},
                   providers=prov, latency=[_latency_row(1.5, [1.42, 1.58], 2.2)])
    res, out = compare(b, other, "--out", tmp_path / "o")
    assert res.exit_code == 0, out
    assert "skipped      latency p50: measured on different hardware (cpu: Xeon vs EPYC)" in out


# ---- end to end: two ONNX files made here ------------------------------------------------------------------------
def _linear_model(path: Path, w: np.ndarray, bias: np.ndarray):
    """[N, 3, 32, 32] float → [N, 10] logits = flatten(x) @ w + bias, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w.astype(np.float32), "W"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "s"),
             numpy_helper.from_array(bias.astype(np.float32), "B")]
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "B"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_two_onnx_files_end_to_end_and_stored_evaluations_agree(tmp_path):
    import onnxruntime as ort

    from convkit.data.load import load_dataset

    data = load_dataset("cifar10", sample=True)
    x, y = data.train_images.numpy() / 255.0, data.train_labels.numpy()
    cents = np.stack([x[y == c].reshape((y == c).sum(), -1).mean(0) for c in range(10)])
    bias = -0.5 * (cents ** 2).sum(1)  # nearest centroid: a weak but real classifier
    a = _linear_model(tmp_path / "a.onnx", cents.T, bias)
    b = _linear_model(tmp_path / "b.onnx", cents.T + np.random.default_rng(0).normal(0, 0.02, cents.T.shape), bias)
    flags = ["--dataset", "cifar10", "--sample", "--mean", "0,0,0", "--std", "1,1,1", "--threads", 1]
    res, out = compare(a, b, *flags, "--blocks", 6, "--block-calls", 5, "--out", tmp_path / "out")
    assert res.exit_code in (0, 1, 4), out
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    # independent: plain onnxruntime on the test images scaled to 0..1
    test_x = (data.test_images.numpy() / 255.0).astype(np.float32)
    test_y = data.test_labels.numpy()
    ok = []
    for m in (a, b):
        s = ort.InferenceSession(str(m), providers=["CPUExecutionProvider"])
        ok.append(s.run(None, {"x": test_x})[0].argmax(1) == test_y)
    top1 = doc["checks"][0]
    assert top1["only_base_right"] == int((ok[0] & ~ok[1]).sum()) > 0
    assert top1["only_candidate_right"] == int((ok[1] & ~ok[0]).sum())
    assert top1["verdict"] == verdict_by_hand(top1["only_candidate_right"], top1["only_base_right"], len(test_y), 0.005)
    assert [c["name"].split(" (")[0] for c in doc["checks"][-2:]] == ["latency p50", "latency p99"]
    assert all(c["ratio_ci"][0] <= c["ratio"] <= c["ratio_ci"][1] for c in doc["checks"][-2:])
    assert (tmp_path / "out" / "flips.png").is_file()
    assert doc["latency_hardware"]["onnxruntime"] == ort.__version__  # what the A/B ran on is recorded
    # every evaluation stores its predictions: compare the two stored evaluations, same accuracy figures
    for m in (a, b):
        r = CliRunner().invoke(main, ["evaluate", str(m), *map(str, flags), "--no-latency"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"{m.stem}_eval" / "eval.predictions.npz").is_file()
    res, out = compare(tmp_path / "a_eval", tmp_path / "b_eval", "--out", tmp_path / "out2")
    stored_top1 = json.loads((tmp_path / "out2" / "compare.json").read_text())["checks"][0]
    assert (stored_top1["only_base_right"], stored_top1["only_candidate_right"]) == (
        top1["only_base_right"], top1["only_candidate_right"])
    assert "latency p50: a stored evaluation has no batch-1 latency" in out  # evaluated with --no-latency


@pytest.mark.slow
def test_evaluate_on_a_folder_stores_paths_and_top5_as_plain_onnxruntime_computes_them(tmp_path):
    import onnxruntime as ort
    from PIL import Image

    rng = np.random.default_rng(7)
    root = tmp_path / "pics"
    names = []
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
            names.append(f"{c}/{i}.png")
    w = rng.normal(0, 0.01, (3 * 32 * 32, 10))
    model = _linear_model(tmp_path / "m.onnx", w, np.zeros(10))
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n" + "\n".join(f"x{i}" for i in range(8)) + "\n")
    r = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(root), "--classes", str(classes), "--crop", "32",
                                  "--mean", "0,0,0", "--std", "1,1,1", "--no-latency", "--threads", "1"],
                           catch_exceptions=False)
    assert r.exit_code in (0, 4), r.output
    preds = pf.read(tmp_path / "m_eval" / "eval.predictions.npz")
    assert preds.image_paths == names and preds.preprocessing["size"] == [32, 32]  # the one preprocessing value
    assert preds.extra["data_root"] == str(root)
    # independent: PIL pixels / 255 through plain onnxruntime, softmax with numpy
    x = np.stack([np.asarray(Image.open(root / n), np.float32).transpose(2, 0, 1) / 255 for n in names])
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    _, v = preds.variant()
    assert np.array_equal(v.top_ids, np.argsort(-logits, 1)[:, :5])
    assert np.allclose(v.top_probs.astype(np.float64), np.sort(soft, 1)[:, ::-1][:, :5], atol=2e-3)
    assert list(preds.labels) == [0] * 6 + [1] * 6

"""Corruption robustness: each corruption against the published formula computed independently here, determinism,
the cache key, an ORT evaluation of corrupted splits against plain onnxruntime + numpy, mCE arithmetic."""

from __future__ import annotations

import colorsys
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convkit import robustness as R
from convkit.cli import main
from convkit.data import corruptions as C

SEED = 7


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A fixed 32×32 RGB image with structure (gradients + a square), [1, 3, 32, 32] uint8."""
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=0).astype(np.float64)
    img[:, 10:20, 12:22] = [[[250]], [[30]], [[90]]]
    return np.clip(img, 0, 255).astype(np.uint8)[None]


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """A fixed 28×28 one-channel image: a bright bar on black, [1, 1, 28, 28] uint8."""
    img = np.zeros((1, 1, 28, 28), np.uint8)
    img[0, 0, 6:22, 12:16] = 255
    img[0, 0, 6:9, 8:20] = 200
    return img


def _float(u8: np.ndarray) -> np.ndarray:
    return u8[0].transpose(1, 2, 0).astype(np.float64) / 255.0


def _published_u8(y: np.ndarray) -> np.ndarray:
    """The published code's last step: clip to [0, 1], × 255, truncate to uint8; back to [1, C, H, W]."""
    return np.uint8(np.clip(y, 0, 1) * 255).transpose(2, 0, 1)[None]


def _gen(name, severity):
    return C.rng_for(name, severity, SEED)


# ---------------------------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("severity", [1, 5])
def test_noise_matches_published_formulas(rgb, severity):
    x = _float(rgb)
    c = [0.04, 0.06, .08, .09, .10][severity - 1]  # make_cifar_c.py gaussian_noise
    want = _published_u8(x + _gen("gaussian_noise", severity).normal(size=x.shape, scale=c))
    assert np.array_equal(C.corrupt(rgb, "gaussian_noise", severity, SEED), want)
    c = [500, 250, 100, 75, 50][severity - 1]  # shot_noise
    want = _published_u8(_gen("shot_noise", severity).poisson(x * c) / c)
    assert np.array_equal(C.corrupt(rgb, "shot_noise", severity, SEED), want)
    c = [.01, .02, .03, .05, .07][severity - 1]  # impulse_noise: skimage's s&p, amount c, salt_vs_pepper 0.5
    gen = _gen("impulse_noise", severity)
    flipped, salted = gen.random(x.shape) < c, gen.random(x.shape) < 0.5
    want = x.copy()
    want[flipped & salted], want[flipped & ~salted] = 1.0, 0.0
    assert np.array_equal(C.corrupt(rgb, "impulse_noise", severity, SEED), _published_u8(want))


def test_contrast_and_brightness_match_published_formulas(rgb):
    x = _float(rgb)
    for sev, c in enumerate([.75, .5, .4, .3, 0.15], start=1):
        means = x.mean(axis=(0, 1), keepdims=True)
        assert np.array_equal(C.corrupt(rgb, "contrast", sev, SEED), _published_u8((x - means) * c + means))
    c = 0.15  # brightness severity 3: V += c in HSV (skimage.color.rgb2hsv ≡ colorsys per pixel)
    want = np.empty_like(x)
    for i in range(32):
        for j in range(32):
            h, s, v = colorsys.rgb_to_hsv(*x[i, j])
            want[i, j] = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
    got = C.corrupt(rgb, "brightness", 3, SEED).astype(int)
    assert np.abs(got - _published_u8(want).astype(int)).max() <= 1  # float rounding at the truncation edge


def test_pixelate_and_jpeg_match_published_pil_calls(rgb):
    pil = Image.fromarray(rgb[0].transpose(1, 2, 0))
    want = np.asarray(pil.resize((int(32 * 0.75), int(32 * 0.75)), Image.BOX).resize((32, 32), Image.BOX))
    assert np.array_equal(C.corrupt(rgb, "pixelate", 4, SEED)[0].transpose(1, 2, 0), want)
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=50)
    want = np.asarray(Image.open(buf))
    assert np.array_equal(C.corrupt(rgb, "jpeg_compression", 4, SEED)[0].transpose(1, 2, 0), want)


def _reflect101(i: int, n: int) -> int:
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def test_defocus_blur_matches_disk_kernel_filtered_by_loops(rgb):
    """Severity 4 (radius 1, alias blur 0.2): disk on a 17×17 grid, 3×3 Gaussian (cv2.GaussianBlur, sigma 0.2),
    correlated with cv2.filter2D's REFLECT_101 borders, all by explicit loops."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx ** 2 + yy ** 2) <= 1).astype(np.float64)
    d /= d.sum()
    g = np.exp(-np.array([-1, 0, 1]) ** 2 / (2 * 0.2 ** 2))
    g /= g.sum()
    k = np.zeros_like(d)
    for i in range(17):
        for j in range(17):
            k[i, j] = sum(g[a] * g[b] * d[_reflect101(i + a - 1, 17), _reflect101(j + b - 1, 17)]
                          for a in range(3) for b in range(3))
    x = _float(rgb)
    want = np.zeros_like(x)
    for i in range(32):
        for j in range(32):
            for a in range(17):
                for b in range(17):
                    if k[a, b]:
                        want[i, j] += k[a, b] * x[_reflect101(i + a - 8, 32), _reflect101(j + b - 8, 32)]
    got = C.corrupt(rgb, "defocus_blur", 4, SEED).astype(int)
    assert np.abs(got - _published_u8(want).astype(int)).max() <= 1


def _zoom_order1(img: np.ndarray, factor: float) -> np.ndarray:
    """scipy.ndimage.zoom(img, (f, f, 1), order=1) by its definition: out i samples in i·(n−1)/(m−1), linear."""
    n = img.shape[0]
    m = round(n * factor)
    pos = np.arange(m) * (n - 1) / (m - 1)
    rows = np.stack([np.stack([np.interp(pos, np.arange(n), img[:, j, c]) for c in range(img.shape[2])], -1)
                     for j in range(n)], axis=1)
    return np.stack([np.stack([np.interp(pos, np.arange(n), rows[i, :, c]) for c in range(img.shape[2])], -1)
                     for i in range(m)], axis=0)


def test_zoom_blur_matches_scipy_zoom_definition(rgb):
    x = _float(rgb)
    out = np.zeros_like(x)
    factors = np.arange(1, 1.06, 0.01)  # severity 1
    for f in factors:
        ch = int(np.ceil(32 / f))
        top = (32 - ch) // 2
        z = _zoom_order1(x[top:top + ch, top:top + ch], f)
        trim = (z.shape[0] - 32) // 2
        out += z[trim:trim + 32, trim:trim + 32]
    want = _published_u8((x + out) / (len(factors) + 1))
    assert np.abs(C.corrupt(rgb, "zoom_blur", 1, SEED).astype(int) - want.astype(int)).max() <= 1


def test_gaussian_filter_matches_truncated_kernel_with_nearest_edges(rgb):
    x = _float(rgb)
    sigma = 0.7
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    want = np.zeros_like(x)
    for i in range(32):
        for j in range(32):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    want[i, j] += k[a + r] * k[b + r] * x[min(max(i + a, 0), 31), min(max(j + b, 0), 31)]
    assert np.allclose(C.gaussian_filter(x, sigma), want, atol=1e-12)


# MNIST-C (google-research/mnist-c corruptions.py), copied here from the published code, severities 1..5
MNIST_C = {"gaussian_noise": [.08, .12, 0.18, 0.26, 0.38], "shot_noise": [60, 25, 12, 5, 3],
           "impulse_noise": [.03, .06, .09, 0.17, 0.27], "contrast": [0.4, .3, .2, .1, .05],
           "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
           "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]}


def _skimage_gaussian_2d_multichannel(img: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(img, sigma, multichannel=True) on a 2-D image: axis 1 is taken for channels, so
    only axis 0 is blurred (scipy's gaussian_filter1d: truncate 4, mode 'nearest'), by its definition."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h = img.shape[0]
    return np.array([sum(k[a + r] * img[min(max(i + a, 0), h - 1)] for a in range(-r, r + 1)) for i in range(h)])


@pytest.mark.parametrize("severity", [1, 4])
def test_glass_blur_one_channel_is_mnist_cs(grey, severity):
    """MNIST-C's glass_blur: blur along axis 0, then per visited pixel (h, w from 28 − d down to d + 1) a coin
    flip and, on heads, a swap with (h + dy, w + dx), dx, dy in [−d, d); blur again. The draws come from convkit's
    generator for (corruption, severity, seed): per iteration the coins, then the shifts, for every visited pixel."""
    sigma, d, iterations = MNIST_C["glass_blur"][severity - 1]
    x = np.uint8(_skimage_gaussian_2d_multichannel(grey[0, 0] / 255.0, sigma) * 255)
    gen = _gen("glass_blur", severity)
    visited = [(h, w) for h in range(28 - d, d, -1) for w in range(28 - d, d, -1)]
    for _ in range(iterations):
        heads = gen.random(len(visited)) < 0.5
        shifts = gen.integers(-d, d, size=(len(visited), 2))
        for (h, w), head, (dx, dy) in zip(visited, heads, shifts):
            if head:
                x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
    want = np.uint8(np.clip(_skimage_gaussian_2d_multichannel(x / 255.0, sigma), 0, 1) * 255)
    assert np.array_equal(C.corrupt(grey, "glass_blur", severity, SEED)[0, 0], want)


def test_one_channel_data_gets_mnist_c_parameters_by_channel_count_not_side(grey):
    """A one-channel image gets MNIST-C's severities whatever its side; an RGB image as small gets CIFAR-10-C's."""
    for side in (28, 96):  # 96 > 64: the side alone would have picked ImageNet-C's, 28 CIFAR-10-C's
        img = np.resize(grey, (1, 1, side, side)).astype(np.uint8)
        x = img[0].transpose(1, 2, 0).astype(np.float64) / 255.0
        for sev in (1, 5):
            c = MNIST_C["gaussian_noise"][sev - 1]
            want = _published_u8(x + _gen("gaussian_noise", sev).normal(size=x.shape, scale=c))
            assert np.array_equal(C.corrupt(img, "gaussian_noise", sev, SEED), want)
            c = MNIST_C["contrast"][sev - 1]
            want = _published_u8((x - x.mean()) * c + x.mean())
            assert np.array_equal(C.corrupt(img, "contrast", sev, SEED), want)
        assert "MNIST-C" in C.parameter_set(side, 1)
    rgb28 = np.repeat(grey, 3, axis=1)
    x = _float(rgb28)
    want = _published_u8(x + _gen("gaussian_noise", 5).normal(size=x.shape, scale=0.10))  # CIFAR-10-C's s5
    assert np.array_equal(C.corrupt(rgb28, "gaussian_noise", 5, SEED), want)


def _warp_bilinear(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """skimage.transform.warp(img, inverse_map=m), order 1, cval 0, by its definition: out[r, c] samples the input
    at m·(c, r, 1), pixel centres at integers."""
    h, w = img.shape
    out = np.zeros_like(img)
    for r in range(h):
        for c in range(w):
            x, y, _ = m @ np.array([c, r, 1.0])
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - x0, y - y0
            v = 0.0
            for dy, wy in ((0, 1 - fy), (1, fy)):
                for dx, wx in ((0, 1 - fx), (1, fx)):
                    yy, xx = y0 + dy, x0 + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        v += wy * wx * img[yy, xx]
            out[r, c] = v
    return out


def test_affine_family_matches_warp_definition(grey):
    x = grey[0, 0].astype(np.float64) / 255.0
    c = 1 / .7  # scale, severity 3: MNIST-C's AffineTransform(scale) about the centre 13.5
    m = np.array([[c, 0, 13.5 * (1 - c)], [0, c, 13.5 * (1 - c)], [0, 0, 1]])
    got = C.corrupt(grey, "scale", 3, SEED)[0, 0].astype(int)
    assert np.abs(got - np.uint8(np.clip(_warp_bilinear(x, m), 0, 1) * 255)).max() <= 1
    sign = int(_gen("rotate", 2).choice([-1, 1]))
    a = 0.4 * sign
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = 13.5 * (1 - lin.sum(axis=1))
    got = C.corrupt(grey, "rotate", 2, SEED)[0, 0].astype(int)
    assert np.abs(got - np.uint8(np.clip(_warp_bilinear(x, m), 0, 1) * 255)).max() <= 1
    dx, dy = 4 * _gen("translate", 4).choice([-1, 1], 2)  # translate: a whole-pixel shift, zeros coming in
    want = np.zeros_like(grey[0, 0])
    src = grey[0, 0]
    for r in range(28):
        for cc in range(28):
            if 0 <= r + dy < 28 and 0 <= cc + dx < 28:
                want[r, cc] = src[r + dy, cc + dx]
    assert np.array_equal(C.corrupt(grey, "translate", 4, SEED)[0, 0], want)


def test_fog_blends_the_plasma_fractal_as_published(rgb):
    x = _float(rgb)
    layer = C.plasma_fractal(32, 3, _gen("fog", 1))
    assert layer.shape == (32, 32) and layer.min() == 0 and layer.max() == 1
    m = x.max()
    want = _published_u8((x + 0.2 * layer[..., None]) * m / (m + 0.2))
    assert np.array_equal(C.corrupt(rgb, "fog", 1, SEED), want)


# ---------------------------------------------------------------------------------------------- determinism, cache


def test_same_seed_same_bytes_other_seed_other_bytes(rgb):
    batch = np.repeat(rgb, 3, axis=0)
    for name in C.available(3):
        a, b = C.corrupt(batch, name, 3, 1), C.corrupt(batch, name, 3, 1)
        assert a.dtype == np.uint8 and a.shape == batch.shape and np.array_equal(a, b), name
    assert not np.array_equal(C.corrupt(batch, "gaussian_noise", 3, 1), C.corrupt(batch, "gaussian_noise", 3, 2))
    assert not np.array_equal(C.corrupt(batch, "gaussian_noise", 3, 1), C.corrupt(batch, "gaussian_noise", 4, 1))


def test_cache_is_keyed_by_checksum_corruption_severity_seed(rgb, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path))
    first, cached = C.corrupted_split(rgb, "sum-a", "gaussian_noise", 2, 0)
    assert not cached
    again, cached = C.corrupted_split(rgb, "sum-a", "gaussian_noise", 2, 0)
    assert cached and np.array_equal(first, again)
    keys = [("sum-a", "gaussian_noise", 2, 0), ("sum-b", "gaussian_noise", 2, 0), ("sum-a", "shot_noise", 2, 0),
            ("sum-a", "gaussian_noise", 3, 0), ("sum-a", "gaussian_noise", 2, 1)]
    files = {C.cache_file(C.cache_key(*k)) for k in keys}
    assert len(files) == 5 and all(Path(f).is_relative_to(tmp_path) for f in files)
    assert not C.corrupted_split(rgb, "sum-b", "gaussian_noise", 2, 0)[1]  # other data: generated, not reused
    path = C.cache_file(C.cache_key("sum-a", "gaussian_noise", 2, 0))
    path.write_bytes(b"damaged")
    out, cached = C.corrupted_split(rgb, "sum-a", "gaussian_noise", 2, 0)
    assert not cached and np.array_equal(out, first)


# ---------------------------------------------------------------------------------------------- mCE arithmetic


def test_mce_and_relative_mce_on_planted_numbers():
    model = {"noise": {1: 0.2, 2: 0.4}, "blur": {1: 0.3, 2: 0.5}, "only_model": {1: 0.9}}
    base = {"noise": {1: 0.4, 2: 0.6}, "blur": {1: 0.5, 2: 0.5}}
    s = R.corruption_scores(model, 0.1, base, 0.3)
    assert s.ce == pytest.approx({"noise": 0.6 / 1.0, "blur": 0.8 / 1.0})
    assert s.mce == pytest.approx((0.6 + 0.8) / 2)
    # relative: Σ(E − E_clean) / Σ(E_base − E_base_clean) = (0.1 + 0.3) / (0.1 + 0.3); (0.2 + 0.4) / (0.2 + 0.2)
    assert s.relative_ce == pytest.approx({"noise": 1.0, "blur": 1.5})
    assert s.relative_mce == pytest.approx(1.25) and s.corruptions == ["noise", "blur"]
    assert R.corruption_scores({"a": {1: 0.1}}, 0.0, {"b": {1: 0.2}}, 0.0).mce is None
    assert R.mean_error(model) == pytest.approx((0.2 + 0.4 + 0.3 + 0.5 + 0.9) / 5)


def test_parse_severities():
    assert R.parse_severities("1-5") == (1, 2, 3, 4, 5) and R.parse_severities("5,1,3") == (1, 3, 5)
    for bad in ("0-3", "6", "a", "2-x"):
        with pytest.raises(Exception, match="--severities"):
            R.parse_severities(bad)


# ---------------------------------------------------------------------------------------------- ORT evaluation


def _linear_nhwc(path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, np.ndarray]:
    """A foreign-style MNIST model: NHWC [N, 28, 28, 1] raw 0..255 in, logits out, nearest-centroid weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    w = (np.stack([x[labels == k].mean(axis=0) for k in range(10)]).T / 255.0).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["img"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 28, 28, 1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w


def test_ort_on_corrupted_splits_equals_plain_onnxruntime(tmp_path):
    import onnxruntime as ort

    from convkit.calibration import calibration_bins
    from convkit.data.load import load_dataset

    data = load_dataset("mnist", sample=True)
    te_x, te_y = data.test_images.numpy(), data.test_labels.numpy()
    path, _ = _linear_nhwc(tmp_path / "m.onnx", data.train_images.numpy(), data.train_labels.numpy())
    args = ["evaluate", str(path), "--dataset", "mnist", "--sample", "--layout", "nhwc", "--input-range", "255",
            "--mean", "0", "--std", "1", "--no-latency", "--threads", "2",
            "--corruptions", "contrast,rotate,fog", "--severities", "2,5"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "m_eval" / "eval.json").read_text())["robustness"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    clean = float((sess.run(None, {"img": te_x.transpose(0, 2, 3, 1).astype(np.float32)})[0].argmax(1) == te_y).mean())
    assert len(doc["rows"]) == 4 and doc["corruptions"] == ["contrast", "rotate"] and list(doc["skipped"]) == ["fog"]
    for row in doc["rows"]:
        imgs = C.corrupt(te_x, row["corruption"], row["severity"], 0)
        z = sess.run(None, {"img": imgs.transpose(0, 2, 3, 1).astype(np.float32)})[0]
        top1 = float((z.argmax(1) == te_y).mean())
        assert row["accuracy"] == pytest.approx(top1, abs=1e-12)
        assert row["delta_vs_clean"] == pytest.approx(top1 - clean, abs=1e-12)
        assert row["ece"] == pytest.approx(calibration_bins(z, te_y)["ece"], abs=1e-9)
    md = (tmp_path / "m_eval" / "eval.md").read_text()
    assert "## Corruption robustness" in md and "frost" in md  # the left-out ones are named
    # 500 images: two top-1 figures differ by noise alone within √2 · 1.96 · sqrt(0.25 / 500) · 100 = 6.2 points
    assert f"within ±{2 ** 0.5 * 1.96 * (0.25 / 500) ** 0.5 * 100:.1f} points" in md and len(te_y) == 500


def test_bad_corruption_flags_exit_2(tmp_path):
    for flags, words in ((["--corruptions", "frost"], "frost is not generated"),
                         (["--corruptions", "fog,pixelate"], "applies to 1-channel"),
                         (["--corruptions", "nope"], "unknown corruption 'nope'"),
                         (["--corruptions", "all", "--severities", "0-9"], "--severities")):
        path, _ = _linear_nhwc(tmp_path / "m.onnx", np.zeros((20, 1, 28, 28), np.uint8), np.arange(20) % 10)
        res = CliRunner().invoke(main, ["evaluate", str(path), "--dataset", "mnist", "--sample", "--layout", "nhwc",
                                        "--no-latency", *flags])
        assert res.exit_code == 2 and words in res.output, res.output


# ---------------------------------------------------------------------------------------------- report section


def _planted_run(name: str, clean: float, errors: dict, int8: dict | None = None) -> object:
    from convkit.report.collect import RunData
    from convkit.suite import get_experiment

    key = "ort/fp32/cpu"
    rows = [{"corruption": c, "severity": s, "backend": "ort", "precision": "fp32", "provider": "cpu",
             "accuracy": 1.0 - e} for c, sev in errors.items() for s, e in sev.items()]
    variants = {key: {"clean_accuracy": clean, "mean_ece": 0.1}}
    doc = {"robustness": {"n": 100, "data_checksum": "same", "rows": rows,
                          "summary": {"variants": variants, "int8_minus_fp32": {"cpu": int8} if int8 else {}}}}
    exp = get_experiment(name)
    return exp, RunData(name, Path(name), exp, {}, exp.model, None, [], [], None, doc)


def test_report_section_computes_mce_against_the_suite_baseline(tmp_path):
    from convkit.report import robustness as RR

    base = _planted_run("t1-fcn", 0.9, {"noise": {1: 0.2, 3: 0.4}, "blur": {1: 0.3, 3: 0.5}})
    cnn = _planted_run("t1-simple-cnn", 0.95, {"noise": {1: 0.1, 3: 0.3}, "blur": {1: 0.1, 3: 0.2}},
                       int8={"clean": -0.001, "corrupted": -0.02})
    runs = {"t1-fcn": base[1], "t1-simple-cnn": cnn[1]}
    blocks = RR.section("Table 1", [base, cnn], runs, tmp_path, lambda p: p.name)
    table = next(b for b in blocks if b[0] == "table")
    by_row = {r[0]: r for r in table[2]}
    # mCE of the CNN: mean(0.4 / 0.6, 0.3 / 0.8); relative: mean((0.4 − 2·0.05) / (0.6 − 2·0.1), (0.3 − 0.1) / 0.6)
    assert by_row["Simple CNN"][4] == f"{np.mean([0.4 / 0.6, 0.3 / 0.8]) * 100:.1f} %"
    assert by_row["Simple CNN"][5] == f"{np.mean([0.3 / 0.4, 0.2 / 0.6]) * 100:.1f} %"
    assert by_row["FCN"][4] == "100.0 %" and by_row["Simple CNN"][3] == "noise"
    assert by_row["Simple CNN"][6] == "-0.10" and by_row["Simple CNN"][7] == "-2.00"
    ce_table = [b for b in blocks if b[0] == "table"][1]
    assert ce_table[1] == ["row", "noise", "blur"]
    assert ce_table[2][1] == ["Simple CNN", f"{0.4 / 0.6 * 100:.0f} %", f"{0.3 / 0.8 * 100:.0f} %"]
    text = " ".join(next(b for b in blocks if b[0] == "ul")[1])
    assert "Lowest mCE" in text and "Simple CNN" in text and "int8 costs more under shift for 1 of 1" in text
    # at 100 images a difference of two top-1 figures is noise within ±1.96·sqrt(0.25/100)·100·√2 = ±13.9 points:
    # the CNN's 82.50 % vs the FCN's 65.00 % mean corrupted top-1 (+17.50) is beyond it; int8's extra 1.9-point
    # loss under shift is not
    assert "+17.50 points against the next, FCN: beyond sampling noise (±13.9 points)" in text, text
    assert "beyond sampling noise for 0 of them" in text, text
    assert any(b[0] == "img" for b in blocks) and (tmp_path / "robustness-table-1.png").is_file()
    # a baseline that loses less than the sampling noise (±9.8 points at 100 images) under a corruption: the
    # relative mCE, a ratio over that loss, is not printed as a figure
    flat = _planted_run("t1-fcn", 0.9, {"noise": {1: 0.15, 3: 0.15}, "blur": {1: 0.3, 3: 0.5}})
    blocks = RR.section("Table 1", [flat, cnn], {"t1-fcn": flat[1], "t1-simple-cnn": cnn[1]}, tmp_path,
                        lambda p: p.name)
    assert next(b for b in blocks if b[0] == "table")[2][1][5] == "within noise"
    alone = RR.section("Table 1", [cnn], {"t1-simple-cnn": cnn[1]}, tmp_path, lambda p: p.name)
    assert "not measured" in next(b for b in alone if b[0] == "table")[2][0][4]

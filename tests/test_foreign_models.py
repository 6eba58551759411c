"""Classifiers made outside convkit, in the shapes real exports have, evaluated with the fewest flags.

Each model is built here with onnx.helper and scores images by their colour or brightness, so its right
preprocessing is known; every expected accuracy comes from an independent PIL + numpy (+ torchvision transforms)
+ plain onnxruntime computation, never from convkit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from convkit.cli import main

COLOURS = ("blue", "green", "red")  # ImageFolder order (sorted); channel index in BGR order
RGB_INDEX = {"red": 0, "green": 1, "blue": 2}


def _cli(args) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["evaluate", *map(str, args), "--provider", "cpu", "--threads", "1",
                                    "--no-latency"])
    return res.exit_code, res.output


def _save(path: Path, nodes, inputs, outputs, inits=(), ml: bool = False) -> Path:
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid("ai.onnx.ml", 1)] if ml else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def colour_folder(root: Path, n: int = 40, size=(20, 16), seed: int = 0) -> Path:
    """An ImageFolder blue/green/red: each image's dominant channel is its class, with noise and a border of
    another colour (so resizing and cropping change the scores)."""
    rng = np.random.default_rng(seed)
    for name in COLOURS:
        (root / name).mkdir(parents=True)
        for i in range(n):
            w, h = size
            img = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
            img[..., RGB_INDEX[name]] = rng.integers(90, 256, (h, w))
            img[: h // 5] = rng.integers(0, 256, 3)  # a top border of a random colour
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def _classes(tmp_path: Path) -> Path:
    f = tmp_path / "classes.txt"
    f.write_text("\n".join(COLOURS) + "\n")
    return f


def bgr_uint8_nhwc_model(path: Path, side: int = 16) -> Path:
    """uint8 [1, S, S, 3] in BGR order, preprocessing inside the graph: scores = per-channel means, i.e. blue,
    green, red — the folder's class order."""
    x = helper.make_tensor_value_info("pixels", TensorProto.UINT8, [1, side, side, 3])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Cast", ["pixels"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["scores"], axes=[1, 2], keepdims=0)]
    return _save(path, nodes, [x], [y])


def _folder_arrays(root: Path, transform) -> tuple[list[np.ndarray], np.ndarray]:
    """Every image of ``root`` through ``transform`` (PIL image → uint8 HWC array), with its class index."""
    xs, ys = [], []
    for k, name in enumerate(COLOURS):
        for f in sorted((root / name).iterdir()):
            with Image.open(f) as im:
                xs.append(np.asarray(transform(im.convert("RGB")), dtype=np.uint8))
            ys.append(k)
    return xs, np.asarray(ys)


def _ort_accuracy(model: Path, feeds: list[np.ndarray], labels: np.ndarray) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = sess.get_outputs()[-1].name
    rows = [sess.run([out], {name: x[None]})[0] for x in feeds]
    rows = [[r[0][k] for k in sorted(r[0])] if isinstance(r, list) else r for r in rows]  # ZipMap: [{class: p}]
    preds = [int(np.asarray(r).argmax()) for r in rows]
    return float((np.asarray(preds) == labels).mean())


def _eval_json(model: Path) -> dict:
    return json.loads((model.parent / f"{model.stem}_eval" / "eval.json").read_text())


def test_bgr_uint8_model_probe_names_the_channel_order_and_exit_4(tmp_path):
    data = colour_folder(tmp_path / "data")
    model = bgr_uint8_nhwc_model(tmp_path / "bgr.onnx")
    xs, y = _folder_arrays(data, lambda im: im.resize((16, 16), Image.Resampling.BILINEAR))
    truth = _ort_accuracy(model, [x[:, :, ::-1] for x in xs], y)  # fed as BGR, as the model wants
    assert truth > 0.9  # a real classifier, so a wrong channel order matters

    code, out = _cli([model, "--data", data])
    assert code == 4, out
    assert "raw uint8 fed; range/mean/std do not apply" in out and "mean [" not in out
    assert "channel_order (default: rgb)" in out and "PREPROCESSING UNVERIFIED: `--channel-order bgr`" in out
    doc = _eval_json(model)
    assert doc["preprocessing"]["verdict"] == "unverified" and doc["summary"]["preprocessing"] == "unverified"
    assert doc["preprocessing"]["probe"]["better"]["flags"] == "--channel-order bgr"
    assert "PREPROCESSING UNVERIFIED" in (model.parent / "bgr_eval" / "eval.md").read_text()

    code, out = _cli([model, "--data", data, "--accept-defaults"])
    assert code == 0, out  # reported, not failed

    # the flags the probe named, saved as the model's sidecar: the next run needs none and warns about nothing
    code, out = _cli([model, "--data", data, "--channel-order", "bgr", "--classes", _classes(tmp_path),
                      "--resize-mode", "squash", "--save-preprocessing"])
    assert code == 0 and "WARNING" not in out, out
    assert _eval_json(model)["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12)
    code, out = _cli([model, "--data", data, "--classes", _classes(tmp_path)])
    assert code == 0 and "WARNING" not in out and "[config: bgr.convkit.json]" in out, out
    assert _eval_json(model)["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12)


def test_collapse_under_stated_preprocessing_is_reported_not_overruled(tmp_path):
    """Every value stated (here wrongly: --channel-order rgb for a BGR model): the accuracy is the model's under
    what was stated, computed independently; the collapse is warned about with the probe's finding, but a stated
    value is never called unverified (exit 0), as an untrained convkit model with its own metadata must not be."""
    data = colour_folder(tmp_path / "data")
    model = bgr_uint8_nhwc_model(tmp_path / "bgr.onnx")
    xs, y = _folder_arrays(data, lambda im: im.resize((16, 16), Image.Resampling.BILINEAR))
    as_stated = _ort_accuracy(model, xs, y)  # fed RGB, as stated
    assert as_stated < 0.5 < _ort_accuracy(model, [x[:, :, ::-1] for x in xs], y)

    code, out = _cli([model, "--data", data, "--channel-order", "rgb", "--classes", _classes(tmp_path),
                      "--resize-mode", "squash"])
    assert code == 0, out
    assert "PREDICTIONS COLLAPSED" in out and "every preprocessing value was stated" in out, out
    assert "--channel-order bgr" in out and "PREPROCESSING UNVERIFIED" not in out, out
    doc = _eval_json(model)
    assert doc["preprocessing"]["verdict"] == "stated" and "preprocessing" not in doc["summary"]
    assert doc["preprocessing"]["probe"]["best"]["flags"].startswith("--channel-order bgr")
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(as_stated, abs=1e-12)


def brightness_mlp(path: Path, side: int = 8) -> Path:
    """A flattened one-channel classifier [N, S*S] on 0..1 pixels, no normalization: class 0 "bright" when the
    mean pixel is above 0.5, class 1 "dark" below."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", side * side])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    half = numpy_helper.from_array(np.array([0.5], np.float32), "half")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["m", "half"], ["d"]), helper.make_node("Neg", ["d"], ["nd"]),
             helper.make_node("Concat", ["d", "nd"], ["logits"], axis=1)]
    return _save(path, nodes, [x], [y], [half])


def test_flattened_mlp_with_raw_pixels_probe_finds_no_normalization(tmp_path):
    rng = np.random.default_rng(1)
    for name, lo, hi in (("bright", 0.52, 0.9), ("dark", 0.3, 0.48)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(60):
            level = rng.uniform(lo, hi)
            img = np.clip(rng.normal(level * 255, 10, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(img, "L").save(tmp_path / "data" / name / f"{i}.png")
    model = brightness_mlp(tmp_path / "mlp.onnx")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    xs, ys = [], []
    for k, name in enumerate(("bright", "dark")):
        for f in sorted((tmp_path / "data" / name).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("L"), np.float32).reshape(-1) / 255)
            ys.append(k)
    truth = float((sess.run(None, {"x": np.stack(xs)})[0].argmax(1) == np.asarray(ys)).mean())

    code, out = _cli([tmp_path / "mlp.onnx", "--data", tmp_path / "data"])
    assert code == 2 and "--input-shape" in out, out  # a flattened input needs its shape
    code, out = _cli([tmp_path / "mlp.onnx", "--data", tmp_path / "data", "--input-shape", "1,8,8"])
    assert code == 4, out
    assert "channels" not in out.split("preprocessing:")[1].splitlines()[0]  # one channel: no channel order
    assert "PREPROCESSING UNVERIFIED: `--input-range 1 --mean 0 --std 1`" in out
    code, out = _cli([tmp_path / "mlp.onnx", "--data", tmp_path / "data", "--input-shape", "1,8,8",
                      "--input-range", "1", "--mean", "0", "--std", "1"])
    assert code == 0, out
    assert _eval_json(model)["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12) and truth == 1.0


def _mean_colour_nodes(out: str, keepdims: int) -> list:
    """NCHW float RGB → per-channel means reordered to blue, green, red (the folder's class order)."""
    order = numpy_helper.from_array(np.array([2, 1, 0], np.int64), "order")
    return [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=keepdims),
            helper.make_node("Gather", ["m", "order"], [out], axis=1)], order


def test_squeezable_output_with_every_flag_prints_no_warning(tmp_path):
    data = colour_folder(tmp_path / "data")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1, 1])
    nodes, order = _mean_colour_nodes("y", keepdims=1)
    model = _save(tmp_path / "gap.onnx", nodes, [x], [y], [order])
    xs, labels = _folder_arrays(data, lambda im: im.resize((16, 16), Image.Resampling.BILINEAR))
    truth = _ort_accuracy(model, [a.transpose(2, 0, 1).astype(np.float32) / 255 for a in xs], labels)
    code, out = _cli([model, "--data", data, "--classes", _classes(tmp_path), "--input-range", "1", "--mean", "0",
                      "--std", "1", "--channel-order", "rgb", "--layout", "nchw", "--resize-mode", "squash"])
    assert code == 0, out
    assert "WARNING" not in out and "defaulted" not in out and "note: the probe" not in out
    doc = _eval_json(model)
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12) and truth > 0.9
    assert doc["preprocessing"]["verdict"] == "stated" and doc["preprocessing"]["probe"] is None


def test_zipmap_probabilities_are_read_and_label_only_outputs_refused(tmp_path):
    data = colour_folder(tmp_path / "data")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])
    seq = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    probs = helper.make_value_info("probabilities", seq)
    nodes, order = _mean_colour_nodes("s", keepdims=0)
    nodes += [helper.make_node("Softmax", ["s"], ["p"], axis=1),
              helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
              helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    model = _save(tmp_path / "zip.onnx", nodes, [x], [label, probs], [order], ml=True)
    xs, labels = _folder_arrays(data, lambda im: im.resize((16, 16), Image.Resampling.BILINEAR))
    truth = _ort_accuracy(model, [a.transpose(2, 0, 1).astype(np.float32) / 255 for a in xs], labels)
    flags = ["--data", data, "--classes", _classes(tmp_path), "--input-range", "1", "--mean", "0", "--std", "1",
             "--channel-order", "rgb"]
    code, out = _cli([model, *flags])
    assert code == 0, out  # the probability output is picked beside the label output
    doc = _eval_json(model)
    assert doc["model"]["output"] == "probabilities" and doc["model"]["output_kind"] == "zipmap"
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12)
    assert doc["accuracy"][0]["output_kind"] == "probabilities"
    code, out = _cli([model, *flags, "--output", "label"])
    assert code == 2 and "integer class ids" in out and "Traceback" not in out, out


def _degenerate_model(path: Path, kind: str) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes, order = _mean_colour_nodes("s", keepdims=0)
    value = np.float32(np.nan) if kind == "nan" else np.float32(0.0)
    k = numpy_helper.from_array(np.array([value], np.float32), "k")
    bias = numpy_helper.from_array(np.array([0.1, 0.7, 0.2], np.float32), "bias")
    nodes += [helper.make_node("Mul", ["s", "k"], ["z"]), helper.make_node("Add", ["z", "bias"], ["y"])]
    return _save(path, nodes, [x], [y], [order, k, bias])


@pytest.mark.parametrize("kind, needle", [("nan", "NaN or Inf for 120 of 120 images"),
                                          ("constant", "identical for every image")])
def test_degenerate_outputs_get_no_accuracy_and_no_recommendation(tmp_path, kind, needle):
    data = colour_folder(tmp_path / "data")
    model = _degenerate_model(tmp_path / f"{kind}.onnx", kind)
    code, out = _cli([model, "--data", data, "--classes", _classes(tmp_path), "--input-range", "1", "--mean", "0",
                      "--std", "1", "--channel-order", "rgb", "--accept-defaults"])
    assert code == 4, out
    assert "OUTPUTS DEGENERATE" in out and needle in out and ": acc " not in out
    doc = _eval_json(model)
    assert doc["accuracy"][0]["degenerate"] and "ort_test_acc" not in doc["summary"]
    assert doc["recommendation"]["recommended"] is None and "degenerate" in doc["recommendation"]["withheld"]
    assert "OUTPUTS DEGENERATE" in (model.parent / f"{kind}_eval" / "eval.md").read_text()


def _colour_model_24(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 24, 24])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes, order = _mean_colour_nodes("y", keepdims=0)
    return _save(path, nodes, [x], [y], [order])


def _normalized(arrays, mean, std) -> list[np.ndarray]:
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return [(a.transpose(2, 0, 1).astype(np.float32) / 255 - m) / s for a in arrays]


def test_hugging_face_and_timm_configs_beside_the_model_give_the_true_accuracy(tmp_path):
    from torchvision import transforms as T

    data = colour_folder(tmp_path / "data", size=(40, 30))
    mean, std = [0.6, 0.4, 0.5], [0.2, 0.3, 0.25]

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    model = _colour_model_24(hf_dir / "model.onnx")
    (hf_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 24, "width": 24},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": mean, "image_std": std}))
    xs, labels = _folder_arrays(data, T.Resize((24, 24), interpolation=T.InterpolationMode.BICUBIC))
    truth = _ort_accuracy(model, _normalized(xs, mean, std), labels)
    code, out = _cli([model, "--data", data, "--classes", _classes(tmp_path), "--channel-order", "rgb"])
    assert code == 0 and "WARNING" not in out, out
    assert "[config: preprocessor_config.json]" in out
    assert _eval_json(model)["accuracy"][0]["accuracy"] == pytest.approx(truth, abs=1e-12)

    timm_dir = tmp_path / "timm"
    timm_dir.mkdir()
    model = _colour_model_24(timm_dir / "model.onnx")
    (timm_dir / "config.json").write_text(json.dumps({"architecture": "tiny", "num_classes": 3, "pretrained_cfg": {
        "input_size": [3, 24, 24], "interpolation": "bicubic", "mean": mean, "std": std, "crop_pct": 0.8,
        "crop_mode": "center"}}))
    # timm's eval transform: Resize(floor(24 / 0.8) = 30) on the shorter side, then CenterCrop(24)
    xs, labels = _folder_arrays(data, T.Compose([T.Resize(30, interpolation=T.InterpolationMode.BICUBIC),
                                                 T.CenterCrop(24)]))
    truth_timm = _ort_accuracy(model, _normalized(xs, mean, std), labels)
    code, out = _cli([model, "--data", data, "--classes", _classes(tmp_path), "--channel-order", "rgb"])
    assert code == 0 and "WARNING" not in out, out
    assert "geometry: shorter side → 30, center crop 24×24" in out and "[mode config: config.json" in out
    assert _eval_json(model)["accuracy"][0]["accuracy"] == pytest.approx(truth_timm, abs=1e-12)


def test_dataset_of_another_size_names_the_folder_route(tmp_path):
    model = _colour_model_24(tmp_path / "m24.onnx")
    code, out = _cli([model, "--dataset", "cifar10", "--sample"])
    assert code == 2 and "--data FOLDER" in out and "--resize/--crop" in out and "Traceback" not in out, out

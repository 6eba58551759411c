"""convkit.preprocessing: each geometry against torchvision or PIL + numpy written here, the pixel conversion
against its formula, training's normalisation against it, and each config format read as its library writes it
(bad values: one line, exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
import torchvision.transforms as T
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from convkit import preprocessing as P
from convkit.cli import main
from convkit.data.loader import normalize
from convkit.errors import ConvkitError
from convkit.preprocessing_config import read_config

RAW = {"input_range": "255", "mean": (0.0,), "std": (1.0,)}  # the model input is the geometry's pixels


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST))


def _pre(**fields) -> P.Preprocessing:
    return P.resolve([("flag", {**RAW, **fields})])


def _ours(arr: np.ndarray, pre: P.Preprocessing) -> np.ndarray:
    return P.apply(arr, pre)[0].transpose(1, 2, 0)


def _pad(content: np.ndarray, th: int, tw: int, centred: bool, value: int = 0) -> np.ndarray:
    out = np.full((th, tw, 3), value, np.float32)
    h, w = content.shape[:2]
    top, left = ((th - h) // 2, (tw - w) // 2) if centred else (0, 0)
    out[top:top + h, left:left + w] = content
    return out


@pytest.mark.parametrize("hw", [(30, 70), (70, 30), (40, 40)])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest", "lanczos"])
def test_shorter_side_and_squash_match_torchvision(hw, interp):
    arr = _image(*hw)
    im = Image.fromarray(arr)
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
            "nearest": T.InterpolationMode.NEAREST, "lanczos": T.InterpolationMode.LANCZOS}[interp]
    tv = np.asarray(T.Compose([T.Resize(36, interpolation=mode), T.CenterCrop((32, 24))])(im), np.float32)
    got = _ours(arr, _pre(resize_mode="shorter", resize=36, size=(32, 24), interpolation=interp))
    assert np.array_equal(got, tv)
    tv = np.asarray(T.Resize((20, 44), interpolation=mode)(im), np.float32)
    assert np.array_equal(_ours(arr, _pre(resize_mode="squash", size=(20, 44), interpolation=interp)), tv)


@pytest.mark.parametrize("hw", [(30, 70), (70, 30), (20, 300)])
def test_letterbox_height_and_longer_match_pil_and_numpy(hw):
    arr = _image(*hw, seed=1)
    im = Image.fromarray(arr)
    h, w = hw
    r = min(40 / h, 60 / w)  # letterbox into 40×60, centred, grey 114 (pixel space)
    nh, nw = round(h * r), round(w * r)
    want = _pad(np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR)), 40, 60, True, 114)
    got = _ours(arr, _pre(resize_mode="letterbox", size=(40, 60), pad="center", pad_value=114))
    assert np.array_equal(got, want)
    nw = min(192, math.ceil(48 * w / h))  # height 48 keeping the ratio, at most 192 wide, padded right
    want = _pad(np.asarray(im.resize((nw, 48), Image.Resampling.BILINEAR)), 48, 192, False)
    assert np.array_equal(_ours(arr, _pre(resize_mode="height", size=(48, 192), pad="end")), want)
    long_side = 50  # longer side 50, the other int(50 * short / long), centred in 50×50
    nh, nw = (50, int(50 * w / h)) if h >= w else (int(50 * h / w), 50)
    want = _pad(np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR)), 50, 50, True)
    assert np.array_equal(_ours(arr, _pre(resize_mode="longer", resize=long_side, size=(50, 50))), want)


def test_pixels_formula_model_space_pad_and_layout():
    arr = _image(30, 90, seed=2)
    pre = P.resolve([("flag", {"resize_mode": "height", "size": (16, 64), "pad": "end", "pad_value": -3.0,
                               "pad_space": "model", "channel_order": "bgr", "mean": (0.5,), "std": (0.25,),
                               "layout": "nhwc"})])
    x = P.apply(arr, pre)[0]  # H, W, C
    nw = math.ceil(16 * 90 / 30)
    pix = np.asarray(Image.fromarray(arr).resize((nw, 16), Image.Resampling.BILINEAR), np.float32)[:, :, ::-1]
    assert x.shape == (16, 64, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :nw], (pix / np.float32(255) - np.float32(0.5)) / np.float32(0.25))
    assert (x[:, nw:] == -3.0).all()
    half = P.apply(arr, pre.replace("flag", dtype="float16", layout="nchw"))
    assert half.dtype == np.float16 and half.shape == (1, 3, 16, 64)


def test_training_normalisation_equals_the_one_apply():
    """Training's on-device multiply-add and the one apply agree to float32 rounding."""
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    ours = P.to_model_input(x.numpy(), P.resolve([("flag", {"mean": mean, "std": std})]))
    np.testing.assert_allclose(normalize(x, mean, std).numpy(), ours, rtol=0, atol=2e-6)


@pytest.mark.parametrize("fields, message", [
    ({"convention": "opencv"}, "OpenCV's resize convention is not supported"),
    ({"antialias": False}, "antialias false"),
    ({"size": (0, 10)}, "from 1 to 4096"),
    ({"size": (100_000, 100_000)}, "from 1 to 4096"),
    ({"pad_value": 300.0}, "must be 0..255"),
    ({"resize_mode": "crop-ish"}, "resize_mode must be one of"),
])
def test_unsupported_or_malformed_fields_are_one_line_errors(fields, message):
    with pytest.raises(ConvkitError, match=message) as err:
        P.resolve([("flag", fields)])
    assert "\n" not in err.value.message and err.value.exit_code == 2


def test_resolver_precedence_flag_config_metadata_default():
    pre = P.resolve([("flag", {"mean": (0.1,)}), ("config: c.json", {"mean": (0.2,), "std": (0.3,)}),
                     ("metadata", {"std": (0.4,), "channel_order": "bgr"})])
    assert (pre.mean, pre.std, pre.channel_order, pre.input_range) == ((0.1,), (0.3,), "bgr", "1")
    assert [pre.source(k) for k in ("mean", "std", "channel_order", "input_range")] == [
        "flag", "config: c.json", "metadata", "default: 0..1"]


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_hugging_face_configs(tmp_path):
    base = {"image_processor_type": "X", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "do_rescale": True, "rescale_factor": 1 / 255, "resample": 3}
    cfg = read_config(_write(tmp_path, "preprocessor_config.json", {**base, "size": {"height": 32, "width": 96}}))
    assert cfg.values()["resize_mode"] == "squash" and cfg.size == (32, 96) and cfg.interpolation == "bicubic"
    cfg = read_config(_write(tmp_path, "a.json", {**base, "size": {"shortest_edge": 256}, "do_center_crop": True,
                                                  "crop_size": {"height": 224, "width": 192}}))
    assert (cfg.resize_mode, cfg.resize, cfg.size, cfg.crop) == ("shorter", 256, (224, 192), "center")
    cfg = read_config(_write(tmp_path, "b.json", {**base, "size": {"shortest_edge": 64}, "do_center_crop": False,
                                                  "crop_size": 56}))
    assert (cfg.resize_mode, cfg.crop, cfg.size) == ("shorter", "none", None)
    cfg = read_config(_write(tmp_path, "c.json", {**base, "size": {"longest_edge": 64}, "do_pad": True,
                                                  "pad_size": {"height": 64, "width": 64}}))
    assert (cfg.resize_mode, cfg.resize, cfg.size, cfg.pad, cfg.pad_space) == ("longer", 64, (64, 64), "end", "model")
    with pytest.raises(ConvkitError, match="do_pad without pad_size"):
        read_config(_write(tmp_path, "d.json", {**base, "size": {"longest_edge": 64}, "do_pad": True}))


def test_timm_pretrained_cfg_crop_modes(tmp_path):
    cfg = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"}
    got = read_config(_write(tmp_path, "config.json", {"pretrained_cfg": {**cfg, "input_size": [3, 224, 224],
                                                                          "crop_pct": 0.9, "crop_mode": "center"}}))
    assert (got.resize_mode, got.resize, got.size) == ("shorter", math.floor(224 / 0.9), (224, 224))
    got = read_config(_write(tmp_path, "s.json", {"pretrained_cfg": {**cfg, "input_size": [3, 64, 128],
                                                                     "crop_pct": 1.0, "crop_mode": "squash"}}))
    assert (got.resize_mode, got.size) == ("squash", (64, 128))
    for mode in ("border", "squash"):
        with pytest.raises(ConvkitError, match=f"crop_mode '{mode}'"):
            read_config(_write(tmp_path, "b.json", {"pretrained_cfg": {**cfg, "input_size": [3, 64, 64],
                                                                       "crop_pct": 0.875, "crop_mode": mode}}))


def test_torchvision_weights_transforms_form(tmp_path):
    """ResNet50_Weights.IMAGENET1K_V2.transforms(): resize 232, crop 224, bilinear, antialias — compared with
    torchvision's own ImageClassification preset on an image."""
    doc = {"format": "torchvision", "resize_size": [232], "crop_size": [224], "interpolation": "bilinear",
           "antialias": True, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    cfg = read_config(_write(tmp_path, "tv.json", doc))
    pre = P.resolve([(cfg.source, cfg.values())])
    from torchvision.transforms._presets import ImageClassification

    arr = _image(260, 300, seed=3)
    want = ImageClassification(crop_size=224, resize_size=232)(Image.fromarray(arr)).numpy()
    np.testing.assert_allclose(P.apply(arr, pre)[0], want, atol=1e-5)


def _tiny_model(path, hw=(8, 8), meta=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], "g", [x], [y],
                              [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def _folder(root, n=6, size=(12, 10)):
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_image(size[1], size[0], seed=i)).save(root / c / f"{i}.png")
    return root


BAD_CONFIGS = [
    ({"image_processor_type": "X", "image_mean": [0.5], "rescale_factor": "abc"}, "rescale_factor must be a number"),
    ({"image_processor_type": "X", "image_mean": [0.5], "size": {"shortest_edge": None}}, "size.shortest_edge"),
    ({"image_processor_type": "X", "image_mean": [0.5], "resample": [2]}, "resample"),
    ({"image_processor_type": "X", "image_mean": [0.5], "size": 0}, "size must be a whole number of pixels from 1"),
    ({"pretrained_cfg": {"input_size": [3, 8, 8], "mean": [0.5], "std": [0.5], "crop_pct": "abc"}}, "crop_pct"),
    ({"pretrained_cfg": {"input_size": [3, "a", "a"], "mean": [0.5], "std": [0.5]}}, "input_size"),
    ({"pretrained_cfg": {"input_size": [3, 100_000, 100_000], "mean": [0.5], "std": [0.5]}}, "from 1 to 4096"),
    ({"schema": "convkit.preprocessing/1", "preprocessing": {"resize": "abc"}}, "resize"),
    ({"schema": "convkit.preprocessing/1", "preprocessing": {"resize": 40.5}}, "resize"),
    ({"schema": "convkit.preprocessing/1", "preprocessing": {"resize": [10, 20, 30]}}, "resize"),
    ({"schema": "convkit.preprocessing/2", "preprocessing": {"size": [8, 8], "mean": "x"}}, "mean"),
    ("[" * 50_000 + "]" * 50_000, "nests deeper"),
]


@pytest.mark.parametrize("doc, message", BAD_CONFIGS)
def test_malformed_config_values_exit_2_in_one_line(tmp_path, doc, message):
    path = _write(tmp_path, "bad.json", doc)
    with pytest.raises(ConvkitError, match=message) as err:
        read_config(path)
    assert "\n" not in err.value.message and str(path) in err.value.message


def test_bad_config_through_evaluate_blames_the_config_not_the_images(tmp_path):
    model = _tiny_model(tmp_path / "m.onnx")
    data = _folder(tmp_path / "data")
    for doc, message in BAD_CONFIGS[3:4] + BAD_CONFIGS[-1:]:
        cfg = _write(tmp_path, "cfg.json", doc)
        res = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "--preprocessing-config",
                                        str(cfg), "--no-latency"])
        out = res.output + (res.stderr if res.stderr_bytes is not None else "")
        assert res.exit_code == 2 and "Traceback" not in out and "cannot decode" not in out, out
        assert message.split()[0] in out and "cfg.json" in out


def test_config_size_disagreeing_with_fixed_model_names_the_config(tmp_path):
    model = _tiny_model(tmp_path / "m.onnx")
    data = _folder(tmp_path / "data")
    cfg = _write(tmp_path, "preprocessor_config.json", {"image_processor_type": "X", "image_mean": [0.5],
                                                        "image_std": [0.5], "size": {"height": 10, "width": 20}})
    res = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "--no-latency"])
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert res.exit_code == 2 and "config: preprocessor_config.json" in out and "8×8" in out, out
    assert cfg.is_file()


def test_ultralytics_classify_metadata_states_the_geometry(tmp_path):
    from convkit.evaluate.model_io import Overrides, inspect_model

    model = _tiny_model(tmp_path / "yolo.onnx", meta={"task": "classify", "imgsz": "[8, 8]",
                                                      "names": "{0: 'a', 1: 'b', 2: 'c'}"})
    spec = inspect_model(model, Overrides(folder="data", folder_classes=["a", "b", "c"]))
    assert (spec.pre.resize_mode, spec.pre.size, spec.pre.mean, spec.pre.std) == ("shorter", (8, 8), (0.0,), (1.0,))
    assert spec.pre.source("resize_mode") == "metadata" and spec.pre.stated_geometry()


def test_stray_config_disagreeing_with_metadata_says_which_won(tmp_path):
    model = _tiny_model(tmp_path / "m.onnx", meta={"mean": "[0.5]", "std": "[0.25]", "input_range": "1",
                                                   "channel_order": "rgb"})
    data = _folder(tmp_path / "data", size=(8, 8))
    _write(tmp_path, "config.json", {"pretrained_cfg": {"mean": [0.9], "std": [0.01]}})
    res = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "--no-latency",
                                    "--accept-defaults"])
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "config: config.json" in out and "mean [0.9] where the model's metadata says [0.5]" in out, out
    assert "the model itself is the likely cause" not in out


def test_fixed_batch_padding_keeps_the_model_space_pad(tmp_path):
    """A model with a fixed batch of 4 on 6 images: the last chunk is filled with copies, and each image's
    model-space pad still lands where its content ends (compared with P.apply image by image)."""
    from convkit.data.folder import FolderImages
    from convkit.evaluate.accuracy import ort_scores
    from convkit.evaluate.model_io import Overrides, inspect_model
    from convkit.providers import ProviderConfig, make_session

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 8, 24])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3 * 8 * 24])
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [4, 3 * 8 * 24])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g", [x], [y], [shape])
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    data = tmp_path / "d"
    (data / "a").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(_image(10 + 3 * i, 12, seed=i)).save(data / "a" / f"{i}.png")
    ov = Overrides(folder="d", folder_classes=[str(i) for i in range(3 * 8 * 24)],
                   geometry={"resize_mode": "height", "pad": "end", "pad_value": 7.0, "pad_space": "model",
                             "size": (8, 24)}, mean=(0.5,), std=(0.5,))
    spec = inspect_model(path, ov)
    paths = sorted((data / "a").iterdir())
    images = FolderImages(paths, 3, (8, 24), pre=spec.pre)
    got = ort_scores(make_session(str(path), ProviderConfig("cpu", threads=1)), spec, images, 256)
    want = np.concatenate([P.apply(np.asarray(Image.open(p).convert("RGB")), spec.pre).reshape(1, -1) for p in paths])
    np.testing.assert_array_equal(got, want)


def test_near_chance_only_when_chance_is_inside_the_wilson_interval():
    """0.747 of 300 on two classes is not chance (its Wilson interval excludes 0.5, per scipy); 0.52 is."""
    from scipy import stats

    from convkit.evaluate.preprocessing_probe import collapse_reason

    labels = np.array([0, 1] * 150)
    for right, chance in ((224, False), (156, True)):
        preds = labels.copy()
        preds[right:] = 1 - preds[right:]
        ci = stats.binomtest(right, 300).proportion_ci(method="wilson")
        assert (ci.low <= 0.5 <= ci.high) == chance
        reason = collapse_reason(labels, preds, ["a", "b"]) or ""
        assert ("indistinguishable from chance" in reason) == chance, reason


def test_no_crop_refuses_an_image_larger_than_the_input():
    arr = _image(30, 60)
    with pytest.raises(ConvkitError, match="exceeds the input 32×32 and the crop is none"):
        P.apply(arr, _pre(resize_mode="shorter", size=(32, 32), crop="none"))
    assert P.apply(arr, _pre(resize_mode="letterbox", size=(32, 32), crop="none")).shape == (1, 3, 32, 32)

"""Fuzz the ONNX input adapter: whatever a model file declares, inspect_model and prepare end in a usable
result or one ConvkitError line, never another exception.

Models are built with onnx.helper: ranks 2..5, fixed, symbolic, zero and negative dims, 1/3/4 channels in
either layout, several element types, odd names, several inputs and outputs, and convkit metadata that may
be missing, malformed or non-finite.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from convkit.data.catalog import DATASETS
from convkit.errors import ConvkitError
from convkit.evaluate.model_io import Overrides, inspect_model

ELEM_TYPES = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.INT64, TensorProto.DOUBLE]
# names protobuf can store: any text without surrogates, including newlines, quotes and spaces
NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
DIM = st.one_of(
    st.sampled_from([1, 3, 4, 28, 32]),  # plausible fixed sizes
    st.integers(min_value=-2, max_value=70),  # anything, zero and negative included
    st.sampled_from(["N", "batch", "h", "w", "c", ""]),  # symbolic (an empty name is still a dim_param)
    st.none(),  # a dim with neither value nor name
)


@st.composite
def dataset_shapes(draw, dataset: str) -> list:
    """A rank-4 NCHW or NHWC shape for ``dataset`` whose dims are each right, symbolic, unset or sometimes wrong."""
    c, h, w = DATASETS[dataset].input_shape

    def dim(right: int):
        return draw(st.sampled_from([right, right, right, "d", None, 0, -1, right + 1]))

    batch = draw(st.sampled_from([None, "N", 1, 3, 0, -1]))
    chw = [dim(c), dim(h), dim(w)]
    return [batch, *chw] if draw(st.booleans()) else [batch, chw[1], chw[2], chw[0]]


@st.composite
def any_shapes(draw) -> list:
    """A shape of rank 2..5 with any dims, or a dataset-like rank-4 one."""
    if draw(st.booleans()):
        return draw(dataset_shapes(draw(st.sampled_from(sorted(DATASETS)))))
    return draw(st.lists(DIM, min_size=2, max_size=5))


def value_info(name: str, elem: int, shape: list | None):
    """Return a tensor ValueInfo; ``shape`` None leaves it without any shape."""
    if shape is None:
        return helper.make_tensor_value_info(name, elem, None)
    vi = helper.make_tensor_value_info(name, elem, [d if isinstance(d, (int, str)) else "x" for d in shape])
    for dim, d in zip(vi.type.tensor_type.shape.dim, shape):
        if d is None:  # neither dim_value nor dim_param
            dim.Clear()
        elif isinstance(d, int):
            dim.Clear()
            dim.dim_value = d
    return vi


@st.composite
def metadata(draw) -> dict[str, str]:
    """convkit metadata as an exporter or a hand-edited file might write it."""
    numbers = st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=4).map(json.dumps),
        st.sampled_from(["0.5", "0.1,0.2,0.3", "[]", "[[1]]", "nan", "abc", "", "[true]", "1e999"]),
    )
    out = {}
    if draw(st.booleans()):
        out["dataset"] = draw(st.sampled_from(["mnist", "cifar10", "mnist", "cifar10", "imagenet", ""]))
    for key in ("mean", "std"):
        if draw(st.sampled_from([False, False, True])):
            out[key] = draw(numbers)
    if draw(st.sampled_from([False, False, True])):
        out["class_names"] = draw(st.one_of(st.lists(NAMES, min_size=9, max_size=11).map(json.dumps),
                                            st.lists(NAMES, max_size=3).map(json.dumps),
                                            st.sampled_from(["5", "{}", "not json", "null", '"abc"'])))
    if draw(st.booleans()):
        out["input_layout"] = draw(st.sampled_from(["NCHW", "NHWC", "nhwc", "CHW", ""]))
    if draw(st.booleans()):
        out["input_range"] = draw(st.sampled_from(["1", "255", "0", ""]))
    return out


@st.composite
def models(draw, plausible: bool):
    """An ONNX model and the user's overrides. ``plausible``: one image input of rank 4 and [N, classes]-like
    outputs, so most cases reach prepare(); otherwise 1..3 inputs and outputs of any rank (or no shape)."""
    dataset = draw(st.sampled_from(sorted(DATASETS)))
    n_in = 1 if plausible else draw(st.integers(1, 3))
    n_out = draw(st.integers(1, 3))
    names = draw(st.lists(NAMES, min_size=n_in + n_out, max_size=n_in + n_out, unique=True))
    inputs = []
    for name in names[:n_in]:
        elem = draw(st.sampled_from(ELEM_TYPES))
        # a graph input without a shape is invalid ONNX: the checker's message must come out as one line too
        shape = draw(dataset_shapes(dataset) if plausible else st.one_of(any_shapes(), st.none()))
        inputs.append(value_info(name, elem, shape))
    outputs, nodes = [], []
    for k in range(n_out):
        logits = st.sampled_from([["N", 10], [None, 10], [1, 10], ["N", 7], ["N", 0], ["N", "k"], [0, 10], [-1, 10]])
        shape = draw(logits if plausible else st.one_of(logits, st.lists(DIM, min_size=1, max_size=3)))
        name = names[n_in + k]
        outputs.append(value_info(name, TensorProto.FLOAT, shape))
        # the checker does not infer shapes: a constant per output keeps the graph valid whatever is declared
        nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                       [1], [0.0])))
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = draw(metadata())
    if plausible:  # the dataset is named, by the metadata or by the user, and it is the one the shape is for
        meta.pop("dataset", None)
        if draw(st.booleans()):
            meta["dataset"] = dataset
    helper.set_model_props(model, meta)
    overrides = Overrides(
        dataset=(None if "dataset" in meta else dataset) if plausible else draw(st.sampled_from([None, *DATASETS])),
        layout=draw(st.sampled_from([None, None, "nchw", "nhwc"])),
        input_range=draw(st.sampled_from([None, None, "1", "255"])),
    )
    return model, overrides


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "model.onnx"


def check_spec(spec, model_path) -> None:
    """A returned ModelSpec must be usable: consistent with its dataset, and prepare() must work or say why."""
    info = DATASETS[spec.dataset]
    assert spec.layout in ("NCHW", "NHWC") and spec.input_range in ("1", "255")
    assert all(d is None or d == want for d, want in zip(spec.image_shape, info.input_shape))
    assert spec.num_classes is None or spec.num_classes == len(spec.class_names)
    assert spec.fixed_batch is None or spec.fixed_batch > 0
    assert all(np.isfinite(spec.mean)) and all(np.isfinite(spec.std)) and all(s > 0 for s in spec.std)
    images = np.random.default_rng(0).integers(0, 256, (2, *info.input_shape), dtype=np.uint8)
    try:
        x = spec.prepare(images)
    except ConvkitError as exc:
        assert "\n" not in exc.message
        return
    assert x.dtype == spec.input_dtype and np.isfinite(x.astype(np.float64)).all()
    want = (2, *info.input_shape) if spec.layout == "NCHW" else (2, *info.input_shape[1:], info.input_shape[0])
    if spec.flat:  # a flattened [N, C*H*W] input takes the images flattened in its layout's order
        want = (2, int(np.prod(info.input_shape)))
    assert x.shape == want


def check_case(case, model_path) -> str:
    """Save and inspect one generated model; returns "error" or "result" after checking either is well formed."""
    model, overrides = case
    onnx.save(model, str(model_path))
    try:
        spec = inspect_model(model_path, overrides)
    except ConvkitError as exc:
        assert exc.message and "\n" not in exc.message and "\r" not in exc.message, exc.message
        return "error"
    check_spec(spec, model_path)
    return "result"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=models(plausible=False))
def test_any_model_gives_a_result_or_one_line_error(case, model_path):
    check_case(case, model_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=models(plausible=True))
def test_image_models_reach_prepare_or_fail_in_one_line(case, model_path):
    check_case(case, model_path)

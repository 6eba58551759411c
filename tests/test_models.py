"""The registry, the 21 seed architectures and the custom layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from convkit.errors import ConvkitError
from convkit.models import create_model, get_model_config, list_models
from convkit.models.kernel_equal import EQUAL_PARAM_WIDTHS
from convkit.models.layers import L2Pool2d, L2Pool2dFunction, SqueezeExcite, SwishPlusReLU
from convkit.suite import SUITES, get_experiment

# The study's true parameter counts, written out independently of the code that builds the models.
SEED_COUNTS = {
    "t1-fcn": 109_386, "t1-simple-cnn": 421_642, "t1-residual-cnn": 160_906,
    "t2-fcn": 3_805_450, "t2-residual-cnn": 161_482, "t2-regularized-residual": 678_058,
    "t3-k3": 161_450, "t3-k5": 177_834, "t3-k7": 202_410, "t3-k1x3": 142_154,
    "t4-2conv": 545_098, "t4-4conv": 1_439_818, "t4-6conv": 814_122, "t4-residual": 327_882,
    "t5-custom-conv": 268_650, "t5-attention": 268_810, "t5-custom-activation": 268_650,
    "t5-custom-pooling": 268_650,
    "t6-basic": 161_482, "t6-bottleneck": 23_520_842, "t6-wide": 2_749_786,
}
SEED = [e.name for e in SUITES["seed"]]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_seed_suite_is_the_studys_21_rows():
    assert sorted(SEED) == sorted(SEED_COUNTS)
    assert [(e.table, e.row) for e in SUITES["seed"]] == sorted((e.table, e.row) for e in SUITES["seed"])


@pytest.mark.parametrize("experiment", SEED)
def test_parameter_count_is_exact(experiment):
    assert n_params(create_model(get_experiment(experiment).model)) == SEED_COUNTS[experiment]


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_finite_and_every_parameter_gets_a_gradient(name):
    cfg = get_model_config(name)
    ever_nonzero: set[str] = set()
    # A ReLU unit can be dead for one random init (SE's 1-unit bottleneck is), so a parameter must
    # receive a non-zero gradient in at least one of a few inits.
    for seed in range(4):
        torch.manual_seed(seed)
        model = create_model(name)
        x = torch.randn(3, *cfg.input_shape)
        out = model(x)
        assert out.shape == (3, cfg.num_classes)
        assert torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not bad, f"no/invalid gradient for {bad}"
        ever_nonzero |= {n for n, p in model.named_parameters() if p.grad.abs().sum() > 0}
        if len(ever_nonzero) == len(list(model.parameters())):
            break
    zero = [n for n, _ in model.named_parameters() if n not in ever_nonzero]
    assert not zero, f"all-zero gradient for {zero}"


def test_equal_parameter_kernel_set_within_2_percent():
    counts = {v: n_params(create_model(f"kernel_eq_{v}")) for v in EQUAL_PARAM_WIDTHS}
    ref = counts["k3"]
    assert ref == SEED_COUNTS["t3-k3"]
    for variant, c in counts.items():
        assert abs(c / ref - 1) <= 0.02, (variant, c, ref)
    # the variants really differ in kernel size
    k7 = create_model("kernel_eq_k7")
    assert {m.kernel_size for m in k7.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)} == {(7, 7)}


def test_l2_pool_gradcheck():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(L2Pool2dFunction.apply, (x,), eps=1e-6, atol=1e-5)


def test_l2_pool_equals_lppool_forward_and_backward():
    x = torch.randn(4, 5, 8, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ours, ref = L2Pool2d()(x), nn.LPPool2d(2, 2, 2)(x2)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ours)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)


def test_l2_pool_is_the_hand_written_function():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    y = L2Pool2d()(x)
    assert "L2Pool2dFunction" in type(y.grad_fn).__name__


def test_l2_pool_zero_window_gives_zero_gradient_not_nan():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    L2Pool2d()(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_custom_activation_formula():
    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(SwishPlusReLU()(x), x * torch.sigmoid(x) + 0.02 * torch.relu(x))


def test_squeeze_excite_scales_channels_in_0_1():
    se = SqueezeExcite(32)
    x = torch.rand(2, 32, 4, 4) + 0.1
    y = se(x)
    ratio = y / x
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))


def test_custom_conv_scale_is_a_fixed_buffer():
    model = create_model("custom_conv_cnn")
    conv = model[0]
    # a buffer, not a parameter: the study's fixed scale is never trained
    assert any(n.rsplit(".", 1)[-1] == "scale" for n, _ in model.named_buffers())
    assert not any("scale" in n for n, _ in model.named_parameters())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1) * 1.5)


def test_default_config_travels_with_model():
    m = create_model("fcn_cifar")
    assert m.default_cfg.dataset == "cifar10" and m.default_cfg.input_shape == (3, 32, 32)
    assert len(m.default_cfg.classes) == 10


def test_list_models_pattern():
    assert list_models("kernel_eq_*") == ["kernel_eq_k1x3", "kernel_eq_k3", "kernel_eq_k5", "kernel_eq_k7"]


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ConvkitError, match="did you mean.*fcn_mnist"):
        create_model("fcn_mnst")
    with pytest.raises(ConvkitError, match="did you mean.*t3-k5"):
        get_experiment("t3-k6")

"""convkit report: receptive fields, calibration, and the report built from real (tiny) training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from convkit.calibration import calibration_bins
from convkit.models import create_model, get_model_config
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

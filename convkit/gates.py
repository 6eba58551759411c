"""Every quality gate convkit applies, in one unit: percentage points of test images.

The export stage and the evaluation stage apply the same numbers, and both command lines (and train-all)
take their defaults from here, so a file that passes export cannot fail train-all's evaluation on a
threshold the export did not know about.

* ``MAX_ACC_DROP`` — how far the ONNX file's top-1 accuracy may fall below the PyTorch model's, per precision.
  fp32 should be numerically the same model (0.1 point covers ties broken differently); fp16 rounding flips
  a few borderline images (0.3); static int8 quantization typically costs up to about a point (1.0).
* ``MAX_DISAGREEMENT`` — how many images (in points) may get a different top-1 class than PyTorch gives them.
  int8 is not gated on agreement (it is reported): quantization legitimately moves borderline images.
* ``FP32_ATOL`` — the largest absolute logit difference between the fp32 file and PyTorch.
"""

from __future__ import annotations

from convkit.errors import ConvkitError

PRECISIONS = ("fp32", "fp16", "int8")
FP32_ATOL = 1e-4
MAX_ACC_DROP = {"fp32": 0.1, "fp16": 0.3, "int8": 1.0}
MAX_DISAGREEMENT = {"fp32": 0.1, "fp16": 1.0, "int8": None}
# Ties: images whose top-two PyTorch logits differ by less than this count apart, never as disagreements.
TIE_GAP = 1e-5


def describe() -> str:
    """Return the gates as one line of text (for --help and reports)."""
    drop = ", ".join(f"{p} {v:g}" for p, v in MAX_ACC_DROP.items())
    dis = ", ".join(f"{p} {v:g}" for p, v in MAX_DISAGREEMENT.items() if v is not None)
    return (f"accuracy drop vs PyTorch at most {drop} points; top-1 disagreement with PyTorch at most {dis} points; "
            f"fp32 max |logit diff| {FP32_ATOL:g}")


def parse_points(text: str | None, option: str, defaults: dict) -> dict:
    """Return {precision: points} from "0.1" (fp32) or "fp32=0.1,fp16=0.5,int8=1", over ``defaults``.

    ConvkitError (exit 2) naming ``option`` when malformed, negative or not finite.
    """
    out = dict(defaults)
    if not text:
        return out
    for part in text.split(","):
        key, _, val = part.strip().rpartition("=")
        key = key.strip() or "fp32"
        if key not in PRECISIONS:
            raise ConvkitError(f"{option}: unknown precision {key!r}; use fp32, fp16 or int8")
        try:
            points = float(val)
        except ValueError:
            raise ConvkitError(f"{option}: {val!r} is not a number of percentage points") from None
        if not 0 <= points <= 100:
            raise ConvkitError(f"{option} must be between 0 and 100 percentage points, got {val}")
        out[key] = points
    return out


def drop_verdict(precision: str, accuracy: float, reference: float, limits: dict | None = None) -> dict:
    """Return {"drop_points", "max_drop_points", "passed"}: ``accuracy`` vs ``reference`` (fractions) in points."""
    limit = (limits or MAX_ACC_DROP)[precision]
    drop = (reference - accuracy) * 100
    return {"drop_points": drop, "max_drop_points": limit, "passed": bool(drop <= limit + 1e-9)}


def disagreement_verdict(precision: str, agreement: float, limits: dict | None = None) -> dict:
    """Return {"disagreement_points", "max_disagreement_points", "passed"} for a top-1 agreement fraction."""
    limit = (limits or MAX_DISAGREEMENT).get(precision)
    points = (1.0 - agreement) * 100
    passed = True if limit is None else bool(points <= limit + 1e-9)  # NaN agreement fails (comparison is False)
    return {"disagreement_points": points, "max_disagreement_points": limit, "passed": passed}

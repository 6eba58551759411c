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

from dataclasses import dataclass, field

from convkit.errors import ConvkitError

PRECISIONS = ("fp32", "fp16", "int8")  # every precision convkit exports and gates, fp32 first
VARIANTS = PRECISIONS[1:]  # the precisions converted from the fp32 file
FP32_ATOL = 1e-4
MAX_ACC_DROP = {"fp32": 0.1, "fp16": 0.3, "int8": 1.0}
MAX_DISAGREEMENT = {"fp32": 0.1, "fp16": 1.0, "int8": None}
# Ties: images whose top-two PyTorch logits differ by less than this count apart, never as disagreements.
TIE_GAP = 1e-5
# MLPerf Inference's Server latency bound for ResNet-50 (image classification; mlperf.conf
# `resnet50.Server.target_latency = 15`): the MLPerf benchmark closest to the classifiers of convkit's suites. The
# serving scenarios' p99 bound and the deployment recommendation's default.
LATENCY_BOUND_MS = 15.0
# what the recommendation prints when no --latency-bound-ms was given: where the default comes from, and why
LATENCY_BOUND_SOURCE = ("default: MLPerf's ResNet-50 Server p99 bound, mlperf.conf resnet50.Server.target_latency, "
                        "the MLPerf benchmark closest to an image classifier; set --latency-bound-ms to your service's")
# export.json's overall verdict over every precision (convkit.export/2; /1 wrote the words pass and fail)
PASSED, FAILED = "passed", "failed"


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


@dataclass(frozen=True)
class Limits:
    """The thresholds one file is judged against; None: that check is reported, not gated (or not made)."""

    max_drop_points: float | None = None
    max_disagreement_points: float | None = None
    atol: float | None = None

    @classmethod
    def for_precision(cls, precision: str, max_drop: dict | None = None, max_disagreement: dict | None = None,
                      atol: float | None = None) -> Limits:
        """Return the limits of ``precision`` from per-precision dicts over the defaults (unknown precision: fp32)."""
        key = precision if precision in PRECISIONS else "fp32"
        return cls({**MAX_ACC_DROP, **(max_drop or {})}[key],
                   {**MAX_DISAGREEMENT, **(max_disagreement or {})}.get(key), atol)


@dataclass
class Verdict:
    """One gate's outcome: ``passed`` (all checks), ``checks`` (the figures in points and their limits, as
    written to export.json / eval.json) and ``reasons`` (one sentence per failed check)."""

    passed: bool
    checks: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the JSON form: the checks flat, then "passed" and "reasons" (the gate key is "passed")."""
        return {**self.checks, "passed": self.passed, "reasons": list(self.reasons)}


def judge(limits: Limits, *, accuracy: float | None = None, reference_accuracy: float | None = None,
          agreement: float | None = None, max_abs_diff: float | None = None) -> Verdict:
    """Return the Verdict of one file against PyTorch: accuracy drop (``accuracy`` vs ``reference_accuracy``,
    fractions), top-1 ``agreement`` (a fraction, ties not counted against it) and fp32's ``max_abs_diff``;
    each check is made when its figure is given and gated when its limit is not None. NaN figures fail."""
    checks, reasons = {}, []
    if max_abs_diff is not None and limits.atol is not None:
        checks["atol"] = limits.atol
        if not max_abs_diff <= limits.atol:  # also fails on NaN
            reasons.append(f"max |logit diff| {max_abs_diff:.3g} > atol {limits.atol:g}")
    if accuracy is not None and reference_accuracy is not None:
        drop = (reference_accuracy - accuracy) * 100
        checks.update(drop_points=drop, max_drop_points=limits.max_drop_points)
        if limits.max_drop_points is not None and not drop <= limits.max_drop_points + 1e-9:
            reasons.append(f"accuracy {accuracy:.4f} is {drop:.2f} points below "
                           f"PyTorch's {reference_accuracy:.4f} (max {limits.max_drop_points:g})")
    if agreement is not None:
        points, limit = (1.0 - agreement) * 100, limits.max_disagreement_points
        checks.update(disagreement_points=points, max_disagreement_points=limit)
        if limit is not None and not points <= limit + 1e-9:  # NaN agreement fails (the comparison is False)
            reasons.append(f"{points:.2f} points of images get another class than "
                           f"PyTorch gives them (max {limits.max_disagreement_points:g})")
    return Verdict(not reasons, checks, reasons)

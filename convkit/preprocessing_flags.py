"""The geometry flags evaluate and ``export --model`` share (one click option group), read into
convkit.preprocessing's field names for its resolver."""

from __future__ import annotations

import re

import click

from convkit import preprocessing as P
from convkit.errors import ConvkitError

NAMES = ("resize_mode", "size", "resize", "crop", "pad", "pad_value", "pad_space", "interpolation", "convention",
         "antialias")


def geometry_options(f):
    """Decorate a click command with the geometry flags (docs/preprocessing.md says what each mode does)."""
    options = [
        click.option("--resize-mode", type=click.Choice(P.MODES), default=None,
                     help="How images reach the input size: shorter (shorter side resized, then center crop: "
                          "torchvision's default), longer (longer side, then pad), squash (both sides to H×W), "
                          "letterbox (fit inside H×W keeping the ratio, then pad), height (height H keeping the "
                          "ratio, width at most W, then pad), none (no resize). Default: shorter."),
        click.option("--size", default=None,
                     help="The input's H×W the images are brought to, e.g. 48x192 or 224 (default: the model's fixed "
                          "input size)."),
        click.option("--resize", type=click.IntRange(1, P.MAX_SIDE), default=None,
                     help=f"shorter/longer: that side's length, at most {P.MAX_SIDE} (default: the size's shorter / "
                          "longer side)."),
        click.option("--crop", default=None,
                     help="center or none: crop the excess of a shorter-side resize centred, or not at all; N: a "
                          "center crop of N×N (same as --size N)."),
        click.option("--pad", type=click.Choice(["end", "center"]), default=None,
                     help="Where padding goes: end (right/bottom) or center (default: center)."),
        click.option("--pad-value", type=float, default=None, help="The padding's value (default 0)."),
        click.option("--pad-space", type=click.Choice(["pixel", "model"]), default=None,
                     help="pixel: --pad-value is a 0..255 pixel, normalised like the image; model: it is written "
                          "into the model input after normalisation (a 'zero-pad' of a normalised model). Default: "
                          "pixel."),
        click.option("--interpolation", type=click.Choice(tuple(P.INTERPOLATIONS)), default=None,
                     help="Resize filter, Pillow's (area is Pillow's BOX). Default: bilinear."),
        click.option("--convention", type=click.Choice(["pillow", "opencv"]), default=None,
                     help="Whose resize the model was trained with (only pillow is supported: opencv exits 2)."),
        click.option("--antialias/--no-antialias", default=None,
                     help="Antialias when shrinking (Pillow always does; --no-antialias exits 2 unless nearest)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_size(text: str | None) -> tuple[int, int] | None:
    """Return (H, W) of "48x192", "48,192" or "224"; ConvkitError (exit 2) otherwise."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d{1,6})\s*(?:[x×,]\s*(\d{1,6}))?\s*", str(text))
    if not m:
        raise ConvkitError(f"--size must be HxW (e.g. 48x192) or N, got {str(text)[:40]!r}")
    h = int(m.group(1))
    return P.check_field("size", (h, int(m.group(2) or h)), "--size")


def geometry_from_cli(cli: dict) -> dict:
    """Return the geometry fields the flags in ``cli`` state (None: not given)."""
    out = {k: cli.get(k) for k in NAMES if k not in ("size", "crop")}
    size, crop = parse_size(cli.get("size")), cli.get("crop")
    if crop is not None and str(crop).strip().isdigit():  # --crop N: the old center crop of N×N
        crop_size = parse_size(crop)
        if size is not None and size != crop_size:
            raise ConvkitError(f"--crop {crop} and --size {cli['size']} disagree; give one")
        size, crop = crop_size, "center"
    out.update(size=size, crop=crop)
    if out.get("resize") is not None and out.get("resize_mode") is None:  # --resize N alone: torchvision's Resize(N)
        out["resize_mode"] = "shorter"
    return {k: v for k, v in out.items() if v is not None}

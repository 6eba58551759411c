"""Common corruptions of a test split (Hendrycks & Dietterich, ICLR 2019; MNIST-C, Mu & Gilmer 2019).

Each corruption maps uint8 images [N, C, H, W] to uint8 images of the same shape. Parameters are the published
ones, chosen by channel count first: one-channel data gets MNIST-C's (google-research/mnist-c ``corruptions.py``,
``MNIST_C_PARAMS``, and its functions where they differ: glass blur swaps a pixel on a coin flip and blurs along
the image's first axis only, as skimage's ``gaussian(multichannel=True)`` does to a 2-D array); colour data gets
CIFAR-10-C's (``make_cifar_c.py``) up to ``SMALL_MAX_SIDE`` pixels and ImageNet-C's (``make_imagenet_c.py``)
above. The affine family is MNIST-C's (one-channel data only). The published
code draws from numpy's global generator; here one ``numpy.random.Generator`` seeded with (seed, corruption,
severity) draws for the whole split, image after image, so the same seed gives the same bytes. Like the
published datasets, the float result is truncated to uint8 (``np.uint8``), not rounded.

Not generated, and said so wherever the list is printed (``LEFT_OUT``): motion blur and snow (the published
code calls ImageMagick's motion blur, which is not reproduced here) and frost (it blends photographs of frost
that the published code ships; convkit ships none and does not substitute its own).

``imagecorruptions`` (PyPI, 1.1.2) was checked first: under numpy 2 and scikit-image 0.26 its gaussian and
glass blur (``multichannel=``) and fog (``np.float_``) raise, it carries only ImageNet-C's parameters, and it
draws from the global generator; hence this module (numpy, PIL, matplotlib and torch only).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image

from convkit.data.cache import load_verified, save_verified
from convkit.data.sources import cache_dir

SMALL_MAX_SIDE = 64  # up to this side: CIFAR-10-C's parameters; above: ImageNet-C's
SEVERITIES = (1, 2, 3, 4, 5)
GENERATOR_VERSION = 2  # bump when a formula changes: cached corrupted splits of the older version are not reused
LEFT_OUT = {
    "motion_blur": "needs ImageMagick's motion blur (the published code's), not reproduced",
    "snow": "needs ImageMagick's motion blur (the published code's), not reproduced",
    "frost": "blends the published code's frost photographs, which convkit does not ship",
}

# ---- published parameters: (CIFAR-10-C, ImageNet-C) per severity 1..5 --------------------------------------------
PARAMS: dict[str, tuple[list, list]] = {
    "gaussian_noise": ([0.04, 0.06, .08, .09, .10], [.08, .12, 0.18, 0.26, 0.38]),
    "shot_noise": ([500, 250, 100, 75, 50], [60, 25, 12, 5, 3]),
    "impulse_noise": ([.01, .02, .03, .05, .07], [.03, .06, .09, 0.17, 0.27]),
    "defocus_blur": ([(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
                     [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
    "glass_blur": ([(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
                   [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
    "zoom_blur": ([(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
                  [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)]),
    "fog": ([(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
            [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]),
    "brightness": ([.05, .1, .15, .2, .3], [.1, .2, .3, .4, .5]),
    "contrast": ([.75, .5, .4, .3, 0.15], [0.4, .3, .2, .1, .05]),
    "pixelate": ([0.95, 0.9, 0.85, 0.75, 0.65], [0.6, 0.5, 0.4, 0.3, 0.25]),
    "jpeg_compression": ([80, 65, 58, 50, 40], [25, 18, 15, 10, 7]),
}
# MNIST-C's affine family (28×28, one severity published there; these are its functions' five levels)
AFFINE_PARAMS = {
    "shear": [0.2, 0.4, 0.6, 0.8, 1.0],
    "rotate": [0.2, 0.4, 0.6, 0.8, 1.0],  # radians, random sign
    "scale": [1 / .9, 1 / .8, 1 / .7, 1 / .6, 1 / .5],
    "translate": [1, 2, 3, 4, 5],  # pixels, random sign per axis
}
# MNIST-C's ``corruptions.py`` (Mu & Gilmer 2019), severities 1..5, for one-channel data: the lists of its functions
MNIST_C_PARAMS: dict[str, list] = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],  # sigma, max_delta, iterations
    "zoom_blur": [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
    "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
    "brightness": [.1, .2, .3, .4, .5],
    "contrast": [0.4, .3, .2, .1, .05],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    **AFFINE_PARAMS,
}


def parameter(name: str, severity: int, side: int, channels: int = 3):
    """Return the published parameter of corruption ``name`` at ``severity`` for images with ``channels`` channels
    ``side`` pixels wide: MNIST-C's for one channel, else CIFAR-10-C's (small) or ImageNet-C's (large)."""
    if channels == 1:
        return MNIST_C_PARAMS[name][severity - 1]
    if name in AFFINE_PARAMS:
        return AFFINE_PARAMS[name][severity - 1]
    small, large = PARAMS[name]
    return (small if side <= SMALL_MAX_SIDE else large)[severity - 1]


def parameter_set(side: int, channels: int) -> str:
    """Return which published parameters apply to images of this size and channel count: a name for reports."""
    if channels == 1:
        return "MNIST-C"
    return "CIFAR-10-C" if side <= SMALL_MAX_SIDE else "ImageNet-C"


# ---- helpers: float images are H×W×C in [0, 1] -----------------------------------------------------------------
def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """Return ``x`` (H×W×C) blurred per channel like skimage.filters.gaussian: truncate 4σ, 'nearest' edges."""
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(k[i] * pad[i:i + x.shape[0], :, :] for i in range(len(k)))
    return sum(k[i] * rows[:, i:i + x.shape[1], :] for i in range(len(k)))


def correlate_reflect101(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Return ``x`` (H×W×C) correlated per channel with a square odd ``kernel``, borders as cv2's REFLECT_101."""
    def ring_is_zero(k: np.ndarray) -> bool:
        return not (k[0].any() or k[-1].any() or k[:, 0].any() or k[:, -1].any())

    while kernel.shape[0] > 1 and ring_is_zero(kernel):
        kernel = kernel[1:-1, 1:-1]  # zero rings add nothing; the published 17×17 grid is mostly zeros
    r = kernel.shape[0] // 2
    pad = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(pad, kernel.shape, axis=(0, 1))
    return np.einsum("hwcij,ij->hwc", windows, kernel)


@lru_cache(maxsize=32)
def disk(radius: float, alias_blur: float) -> np.ndarray:
    """Return the published defocus kernel: a normalized disk, then a 3×3 (5×5 above radius 8) Gaussian blur."""
    side = max(8, radius)
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-side, side + 1)
    xx, yy = np.meshgrid(grid, grid)
    aliased = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    aliased /= aliased.sum()
    t = np.arange(ksize) - ksize // 2
    g = np.exp(-(t ** 2) / (2 * alias_blur ** 2))
    g /= g.sum()
    return correlate_reflect101(aliased[..., None].astype(np.float64), np.outer(g, g))[..., 0]


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Return the centre of ``x`` (H×W×C, square) zoomed by ``factor`` (scipy.ndimage.zoom order 1), cropped to H×W."""
    h = x.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    crop = torch.from_numpy(np.ascontiguousarray(x[top:top + ch, top:top + ch].transpose(2, 0, 1)))[None].double()
    size = round(ch * factor)
    zoomed = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True)[0].numpy().transpose(1, 2, 0)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Return a mapsize² diamond-square height map in [0, 1] (the published fog's), drawn from ``rng``."""
    m = np.zeros((mapsize, mapsize), dtype=np.float64)
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corners = m[0:mapsize:step, 0:mapsize:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = squares / 4 + wibble * rng.uniform(-wibble, wibble, squares.shape)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1)
        m[0:mapsize:step, half:mapsize:step] = lt / 4 + wibble * rng.uniform(-wibble, wibble, lt.shape)
        tt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0)
        m[half:mapsize:step, 0:mapsize:step] = tt / 4 + wibble * rng.uniform(-wibble, wibble, tt.shape)
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def _pil(x: np.ndarray) -> Image.Image:
    """Return the uint8 PIL image of float ``x`` (H×W×C in [0, 1]) as the published code holds it."""
    u8 = np.uint8(np.clip(x, 0, 1) * 255)
    return Image.fromarray(u8[..., 0], "L") if u8.shape[2] == 1 else Image.fromarray(u8, "RGB")


def _from_pil(img: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64) / 255.0
    return a[..., None] if channels == 1 else a


# ---- the corruptions: (x: H×W×C float in [0, 1], published parameter, generator) → float image ------------------
def gaussian_noise(x, c, rng):
    return x + rng.normal(size=x.shape, scale=c)


def shot_noise(x, c, rng):
    return rng.poisson(x * c) / c


def impulse_noise(x, c, rng):
    """Salt and pepper as skimage.util.random_noise(mode='s&p', amount=c): half salt, half pepper."""
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def defocus_blur(x, c, rng):
    return correlate_reflect101(x, disk(radius=c[0], alias_blur=c[1]))


def gaussian_filter_rows(x: np.ndarray, sigma: float) -> np.ndarray:
    """Return ``x`` (H×W×1) blurred along its first axis only: skimage's ``gaussian(x2d, sigma,
    multichannel=True)`` on MNIST-C's 2-D image takes its columns for channels (truncate 4σ, 'nearest' edges)."""
    radius = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float64) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    return sum(k[i] * pad[i:i + x.shape[0]] for i in range(len(k)))


def glass_blur(x, c, rng):
    """Blur, shuffle pixels locally, blur again. Like the published code: dx, dy in [-c1, c1) (numpy's randint).
    RGB (CIFAR-10-C / ImageNet-C): every visited pixel copies its neighbour (tuple assignment of numpy views),
    blurs in both axes. One channel (MNIST-C): each visited pixel is swapped with its neighbour on a coin flip,
    and both blurs run along the first axis only (see ``gaussian_filter_rows``)."""
    sigma, reach, iterations = c
    h, w = x.shape[:2]
    one = x.shape[2] == 1
    blur = gaussian_filter_rows if one else gaussian_filter
    img = np.uint8(blur(x, sigma) * 255)
    rows, cols = range(h - reach, reach, -1), range(w - reach, reach, -1)
    for _ in range(iterations):
        # the published visiting order; per pixel a coin (one channel) and a shift, drawn at once for speed
        n = len(rows) * len(cols)
        heads = (rng.random(n) < 0.5).tolist() if one else [True] * n
        shifts = rng.integers(-reach, reach, size=(n, 2)).tolist()
        k = 0
        for i in rows:
            for j in cols:
                dx, dy = shifts[k]
                flip = heads[k]
                k += 1
                ip, jp = i + dy, j + dx
                if one and flip:
                    img[i, j, 0], img[ip, jp, 0] = img[ip, jp, 0], img[i, j, 0]
                elif not one:
                    img[i, j] = img[ip, jp]
    return blur(img / 255.0, sigma)


def zoom_blur(x, c, rng):
    factors = np.arange(*c)
    out = np.zeros_like(x)
    for f in factors:
        out += clipped_zoom(x, float(f))
    return (x + out) / (len(factors) + 1)


def fog(x, c, rng):
    side = x.shape[0]
    small_colour = side <= SMALL_MAX_SIDE and x.shape[2] != 1  # MNIST-C, like ImageNet-C, crops a 256² map
    mapsize = 256 if side <= 256 and not small_colour else 1 << (max(side, x.shape[1]) - 1).bit_length()
    max_val = x.max()
    layer = plasma_fractal(mapsize, c[1], rng)[:x.shape[0], :x.shape[1]][..., None]
    return (x + c[0] * layer) * max_val / (max_val + c[0])


def brightness(x, c, rng):
    if x.shape[2] == 1:  # HSV's value of a grey pixel is the pixel itself
        return np.clip(x + c, 0, 1)
    hsv = rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return hsv_to_rgb(hsv)


def contrast(x, c, rng):
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def pixelate(x, c, rng):
    img = _pil(x)
    w, h = img.size
    img = img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return _from_pil(img, x.shape[2])


def jpeg_compression(x, c, rng):
    buf = io.BytesIO()
    _pil(x).save(buf, "JPEG", quality=c)
    return _from_pil(Image.open(buf), x.shape[2])


def _affine(x, matrix: np.ndarray) -> np.ndarray:
    """Return ``x`` warped with the output→input map ``matrix`` (skimage.transform.warp's convention: pixel
    centres at integers, bilinear, zero outside), via PIL whose pixel centres sit at +0.5."""
    a = matrix[:2, :2]
    t = matrix[:2, 2] + 0.5 - a @ np.array([0.5, 0.5])
    coeffs = (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])
    chans = [Image.fromarray(x[..., k].astype(np.float32), "F").transform(
        (x.shape[1], x.shape[0]), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0.0)
        for k in range(x.shape[2])]
    return np.stack([np.asarray(ch, dtype=np.float64) for ch in chans], axis=2)


def _centred(linear: np.ndarray, side: int) -> np.ndarray:
    """Return the 3×3 map applying ``linear`` about the image centre ((side − 1) / 2, as MNIST-C's 13.5)."""
    centre = (side - 1) / 2
    m = np.eye(3)
    m[:2, :2] = linear
    m[0, 2] = centre * (1 - linear[0, 0] - linear[0, 1])
    m[1, 2] = centre * (1 - linear[1, 0] - linear[1, 1])
    return m


def shear(x, c, rng):
    s = c * int(rng.choice([-1, 1]))
    return _affine(x, _centred(np.array([[1.0, -np.sin(s)], [0.0, np.cos(s)]]), x.shape[0]))


def rotate(x, c, rng):
    r = c * int(rng.choice([-1, 1]))
    return _affine(x, _centred(np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]), x.shape[0]))


def scale(x, c, rng):
    return _affine(x, _centred(np.array([[c, 0.0], [0.0, c]]), x.shape[0]))


def translate(x, c, rng):
    dx, dy = c * rng.choice([-1, 1], 2)
    m = np.eye(3)
    m[0, 2], m[1, 2] = dx, dy
    return _affine(x, m)


@dataclass(frozen=True)
class Corruption:
    """One corruption: its name, the benchmark's family, the function and whether it suits one-channel data."""

    name: str
    family: str
    apply: Callable
    one_channel: bool  # in the one-channel (MNIST-C style) subset
    colour: bool = True  # in the RGB (CIFAR-10-C / ImageNet-C) list


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", gaussian_noise, True),
    Corruption("shot_noise", "noise", shot_noise, True),
    Corruption("impulse_noise", "noise", impulse_noise, True),
    Corruption("defocus_blur", "blur", defocus_blur, True),
    Corruption("glass_blur", "blur", glass_blur, True),
    Corruption("zoom_blur", "blur", zoom_blur, True),
    Corruption("fog", "weather", fog, False),
    Corruption("brightness", "weather", brightness, False),
    Corruption("contrast", "digital", contrast, True),
    Corruption("pixelate", "digital", pixelate, False),
    Corruption("jpeg_compression", "digital", jpeg_compression, False),
    Corruption("shear", "affine", shear, True, colour=False),
    Corruption("rotate", "affine", rotate, True, colour=False),
    Corruption("scale", "affine", scale, True, colour=False),
    Corruption("translate", "affine", translate, True, colour=False),
)}


def available(channels: int) -> list[str]:
    """Return the corruption names that apply to images with ``channels`` channels, in benchmark order."""
    return [c.name for c in CORRUPTIONS.values() if (c.one_channel if channels == 1 else c.colour)]


def rng_for(name: str, severity: int, seed: int) -> np.random.Generator:
    """Return the generator of one (corruption, severity, seed): independent of every other pair."""
    index = list(CORRUPTIONS).index(name)
    return np.random.default_rng([int(seed), index, int(severity), GENERATOR_VERSION])


def corrupt(images_u8: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Return ``images_u8`` [N, C, H, W] (uint8) corrupted by ``name`` at ``severity`` (1–5), as uint8.

    Deterministic: one generator per (corruption, severity, seed) draws for the images in order.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of 1..5")
    rng = rng_for(name, severity, seed)
    fn, param = CORRUPTIONS[name].apply, parameter(name, severity, images_u8.shape[-1], images_u8.shape[1])
    out = np.empty_like(images_u8)
    for i, img in enumerate(images_u8):
        x = img.transpose(1, 2, 0).astype(np.float64) / 255.0
        y = np.clip(fn(x, param, rng), 0, 1) * 255  # as published: clip to [0, 1], scale, truncate to uint8
        out[i] = np.uint8(y).transpose(2, 0, 1)
    return out


# ---- the cache: corrupted splits as uint8 tensors in convkit's tensor cache ----------------------------------------
def cache_key(data_checksum: str, name: str, severity: int, seed: int) -> dict:
    """Return what identifies a corrupted split: the clean data's checksum, corruption, severity, seed, generator."""
    return {"data_checksum": str(data_checksum), "corruption": name, "severity": int(severity), "seed": int(seed),
            "generator_version": GENERATOR_VERSION}


def cache_file(key: dict) -> Path:
    """Return the cache file of ``key``: under $CONVKIT_CACHE/tensors/corrupted/, named by the key's hash."""
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:24]
    return cache_dir() / "tensors" / "corrupted" / f"{key['corruption']}-s{key['severity']}-{digest}.pt"


def corrupted_split(images_u8: np.ndarray, data_checksum: str, name: str, severity: int,
                    seed: int = 0) -> tuple[np.ndarray, bool]:
    """Return (the corrupted split, whether it came from the cache).

    The cache entry stores its key and the sha256 of its pixels (convkit.data.cache) and is used only when both
    check and the image shape matches; a damaged, foreign or altered entry is regenerated (a line on stderr says
    so), and a cache that cannot be written only costs the generation next time.
    """
    key = cache_key(data_checksum, name, severity, seed)
    path = cache_file(key)
    cached = load_verified(path, key, f"corrupted split {name}/{severity}")
    if cached is not None and set(cached) == {"images"} and tuple(cached["images"].shape) == images_u8.shape:
        return cached["images"].numpy(), True
    out = corrupt(images_u8, name, severity, seed)
    save_verified(path, key, {"images": torch.from_numpy(out)})
    return out, False

"""Draw docs/images/preprocessing_modes.png: one photo-like test image through each geometry of
convkit.preprocessing (the same code evaluate and export run), so docs/preprocessing.md shows what each mode does.

    python scripts/preprocessing_figure.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from convkit import plotting
from convkit import preprocessing as P

MODES = [
    ("original 60×150", None),
    ("shorter → 48, center crop 48×96", {"resize_mode": "shorter", "size": (48, 96)}),
    ("longer → 96, pad centred to 48×96", {"resize_mode": "longer", "size": (48, 96), "pad_value": 128}),
    ("squash to 48×96", {"resize_mode": "squash", "size": (48, 96)}),
    ("letterbox into 96×96 (pad 128)", {"resize_mode": "letterbox", "size": (96, 96), "pad_value": 128}),
    ("height 48, width ≤ 192, pad end", {"resize_mode": "height", "size": (48, 192), "pad": "end"}),
]


def test_image() -> np.ndarray:
    """Return a 60×150 RGB image: a gradient with a grid, a circle and a bar, so crops and squashes show."""
    h, w = 60, 150
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 160.0)], -1)
    img[(x % 25 == 0) | (y % 20 == 0)] = 255
    img[(x - 30) ** 2 + (y - 30) ** 2 < 18 ** 2] = (220, 40, 40)
    img[20:40, 100:140] = (30, 30, 200)
    return img.astype(np.uint8)


def main(out: Path) -> Path:
    img = test_image()
    fig = plotting.new_figure(10, 4.2)
    for i, (title, fields) in enumerate(MODES):
        ax = fig.add_subplot(2, 3, i + 1)
        if fields is None:
            shown = img
        else:
            pre = P.resolve([("flag", {"input_range": "255", "mean": (0.0,), "std": (1.0,), **fields})])
            shown = P.apply(img, pre)[0].transpose(1, 2, 0).astype(np.uint8)
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return plotting.save(fig, out, dpi=80)


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/preprocessing_modes.png")))

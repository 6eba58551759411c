"""Cost of generating each corruption (not a test): milliseconds per image and the extrapolated time for a whole
test split, per dataset, at severities 1, 3 and 5 (median over the severities), on this machine's CPU.

    python bench/corruption_cost.py --images 500                       # the embedded sample (MNIST, CIFAR-10)
    python bench/corruption_cost.py --data-dir DIR --images 1000       # real data, 1,000 test images each

Prints a Markdown table. Generation only: the ONNX Runtime / PyTorch passes over a corrupted split cost what a
clean evaluation costs (one more pass per corruption × severity × variant × provider).
"""

from __future__ import annotations

import argparse
import statistics
import time

from convkit.data import corruptions as C
from convkit.data.load import load_dataset

FULL_SPLIT = 10_000  # MNIST and CIFAR-10 test splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="Real data folder (default: the embedded sample).")
    ap.add_argument("--images", type=int, default=500, help="Test images per dataset to corrupt.")
    args = ap.parse_args()
    print("| dataset | corruption | ms / image (median of severities 1, 3, 5) "
          "| whole 10,000-image split × 5 severities |")
    print("|---|---|---:|---:|")
    for name in ("mnist", "cifar10"):
        data = load_dataset(name, args.data_dir, sample=args.data_dir is None, max_images=args.images)
        images = data.test_images.numpy()
        for corruption in C.available(images.shape[1]):
            per_image = []
            for severity in (1, 3, 5):
                t0 = time.perf_counter()
                C.corrupt(images, corruption, severity, seed=0)
                per_image.append((time.perf_counter() - t0) / len(images))
            ms = statistics.median(per_image) * 1000
            print(f"| {name} | {corruption} | {ms:.2f} | {ms * FULL_SPLIT * 5 / 1000:.0f} s |")


if __name__ == "__main__":
    main()

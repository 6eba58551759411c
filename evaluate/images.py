"""Which test images an evaluation runs on: a catalog dataset's test split (held in memory, as trained), or any
labelled image folder / CSV given with ``--data`` (decoded lazily in bounded batches, resized and center-cropped
in the torchvision/timm evaluation convention)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convkit.data.folder import MAX_SIDE, FolderImages, LabelledFiles, read_text_file
from convkit.data.load import load_dataset
from convkit.errors import ConvkitError


@dataclass
class TestData:
    """Test images (uint8 [N, C, H, W], an array or a FolderImages), int64 labels, provenance, how they were read."""

    name: str
    images: object
    labels: np.ndarray
    source: str
    checksum: str
    reading: dict = field(default_factory=dict)  # --data: resize/crop/interpolation and where each came from


def read_classes(path: str | Path) -> list[str]:
    """Return the class names of a --classes file, one per line in the model's output order (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise ConvkitError(f"--classes {p}: not found; give a text file with one class name per line, in the model's "
                           f"output order")
    names = [line.strip() for line in read_text_file(p, "--classes").splitlines() if line.strip()]
    if len(set(names)) != len(names) or not names:
        raise ConvkitError(f"--classes {p}: needs one distinct class name per line")
    return names


def catalog_data(dataset: str, data_dir, sample: bool, max_images: int | None = None) -> TestData:
    """Return the test split of catalog ``dataset`` (in memory, uint8; at most ``max_images`` per split)."""
    data = load_dataset(dataset, data_dir, sample=sample, max_images=max_images)
    return TestData(dataset, data.test_images.numpy(), data.test_labels.numpy(), data.source, data.checksum)


def folder_data(name: str, files: LabelledFiles, spec) -> TestData:
    """Return the TestData of an image folder for the model ``spec``: labels mapped to its class order (a label it
    does not know is a ConvkitError naming it), images decoded lazily with the geometry of ``spec.pre``
    (convkit.preprocessing: resized, cropped or padded to the model's input size); ``reading`` records it."""
    index = {name: i for i, name in enumerate(spec.class_names)}
    unknown = sorted(set(files.labels) - set(index))
    if unknown:
        raise ConvkitError(f"--data has label(s) the model does not know: {', '.join(map(repr, unknown[:10]))}"
                           f"{' …' if len(unknown) > 10 else ''}; its classes ({spec.sources.get('classes')}): "
                           f"{', '.join(spec.class_names[:20])}{' …' if len(spec.class_names) > 20 else ''}; "
                           f"pass --classes FILE with the model's class names in output order")
    pre = spec.pre
    if pre.size is None:
        raise ConvkitError(f"{spec.path.name} has no fixed input height/width; pass --size HxW (and --resize-mode) "
                           f"or a --preprocessing-config that states it")
    channels = spec.image_shape[0] or 3
    if channels not in (1, 3):  # Pillow decodes to grayscale or RGB; anything else is not an image convkit reads
        raise ConvkitError(f"{spec.path.name} takes {channels}-channel input, but --data images are decoded to 1 "
                           f"(grayscale) or 3 (RGB) channels; evaluate it on a catalog dataset with --dataset, or "
                           f"re-export it for 1 or 3 channels")
    if max(pre.size) > MAX_SIDE:
        raise ConvkitError(f"{spec.path.name}: input {pre.size[0]}×{pre.size[1]} is larger than convkit decodes "
                           f"(each side at most {MAX_SIDE})")
    images = FolderImages(files.paths, channels, pre.size, pre=pre)
    labels = np.asarray([index[lab] for lab in files.labels], dtype=np.int64)
    return TestData(name, images, labels, files.source, files.checksum, reading_record(pre))


def reading_record(pre) -> dict:
    """Return eval.json's record of how --data images were read: the geometry fields and their sources."""
    from convkit.preprocessing import GEOMETRY_FIELDS

    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.to_json().items() if k in GEOMETRY_FIELDS}
    return {"geometry": pre.geometry_line(), **out, "geometry_sources": {k: pre.source(k) for k in GEOMETRY_FIELDS}}

"""Which test images an evaluation runs on: a catalog dataset's test split (held in memory, as trained), or any
labelled image folder / CSV given with ``--data`` (decoded lazily in bounded batches, resized and center-cropped
in the torchvision/timm evaluation convention)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convkit.data.folder import INTERPOLATIONS, MAX_SIDE, FolderImages, LabelledFiles, read_text_file
from convkit.data.load import load_dataset
from convkit.data_freshness import catalog_location, folder_location
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
    location: dict = field(default_factory=dict)  # where the images are: convkit.data_freshness checks them later


@dataclass(frozen=True)
class ReadingOptions:
    """How --data images are resized and cropped, each value with its source (None: not given)."""

    resize: int | tuple[int, int] | None = None
    resize_source: str | None = None
    crop: int | None = None
    crop_source: str | None = None
    interpolation: str | None = None
    interpolation_source: str | None = None


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
    return TestData(dataset, data.test_images.numpy(), data.test_labels.numpy(), data.source, data.checksum,
                    location=catalog_location(dataset, data_dir, sample, max_images))


def folder_data(name: str, files: LabelledFiles, spec, reading_opts: ReadingOptions) -> TestData:
    """Return the TestData of an image folder for the model ``spec``: labels mapped to its class order (a label it
    does not know is a ConvkitError naming it), images decoded lazily at the model's input size.

    The crop is the model's fixed H×W (``--crop`` must agree), else ``--crop``; ``--resize`` (shorter side, or
    height × width from a config that resizes without keeping the aspect) defaults to the crop size, i.e. the
    whole image scaled, its longer side center-cropped. Each value's source is recorded (flag, config, default).
    """
    index = {name: i for i, name in enumerate(spec.class_names)}
    unknown = sorted(set(files.labels) - set(index))
    if unknown:
        raise ConvkitError(f"--data has label(s) the model does not know: {', '.join(map(repr, unknown[:10]))}"
                           f"{' …' if len(unknown) > 10 else ''}; its classes ({spec.sources.get('classes')}): "
                           f"{', '.join(spec.class_names[:20])}{' …' if len(spec.class_names) > 20 else ''}; "
                           f"pass --classes FILE with the model's class names in output order")
    o = reading_opts
    _, h, w = spec.image_shape
    reading = {}
    if h and w:
        if o.crop and (o.crop, o.crop) != (h, w):
            raise ConvkitError(f"--crop {o.crop} ({o.crop_source}) does not fit the model's fixed input {h}×{w}; "
                               f"drop --crop or pass {h}")
        size, reading["crop_source"] = (h, w), o.crop_source or "guessed: the model's fixed input size"
    elif o.crop:
        size, reading["crop_source"] = (o.crop, o.crop), o.crop_source
    else:
        raise ConvkitError(f"{spec.path.name} has no fixed input height/width; pass --crop N (and --resize N)")
    resize_to = o.resize or min(size)
    reading.update(resize=list(resize_to) if isinstance(resize_to, tuple) else resize_to,
                   resize_source=o.resize_source or "default: the crop size", crop=list(size),
                   interpolation=o.interpolation or "bilinear",
                   interpolation_source=o.interpolation_source or "default: bilinear")
    if reading["interpolation"] not in INTERPOLATIONS:
        raise ConvkitError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}")
    channels = spec.image_shape[0] or 3
    if channels not in (1, 3):  # Pillow decodes to grayscale or RGB; anything else is not an image convkit reads
        raise ConvkitError(f"{spec.path.name} takes {channels}-channel input, but --data images are decoded to 1 "
                           f"(grayscale) or 3 (RGB) channels; evaluate it on a catalog dataset with --dataset, or "
                           f"re-export it for 1 or 3 channels")
    if max(size) > MAX_SIDE:
        raise ConvkitError(f"{spec.path.name}: input {size[0]}×{size[1]} is larger than convkit decodes (each side at "
                           f"most {MAX_SIDE})")
    images = FolderImages(files.paths, channels, size, resize_to, reading["interpolation"])
    labels = np.asarray([index[lab] for lab in files.labels], dtype=np.int64)
    return TestData(name, images, labels, files.source, files.checksum, reading, folder_location(files.location))

"""Static facts about the supported datasets: shape, normalization and class names."""

from __future__ import annotations

from dataclasses import dataclass

from convkit.errors import ConvkitError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its dataset."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        input_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        classes=tuple(str(i) for i in range(10)),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    """Return the DatasetInfo for ``name``; raise ConvkitError naming the known datasets otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConvkitError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def display_name(dataset: str, source: str | None) -> str:
    """Return how reports name a dataset read from ``source``: "CIFAR-10 (JPEG copy)" for a JPEG re-encoding of
    CIFAR-10 (its accuracies differ from the original's by up to about a point), else the dataset's name."""
    src = (source or "").lower()
    if dataset == "cifar10" and ("jpeg" in src or "jpg" in src):
        return "CIFAR-10 (JPEG copy)"
    return {"cifar10": "CIFAR-10", "mnist": "MNIST"}.get(dataset, dataset)

"""Where data enters convkit: dataset catalog, source discovery, decoded-tensor cache, device-side loader, and the
common corruptions of a test split (``corruptions``)."""

from convkit.data.catalog import DATASETS, DatasetInfo, get_dataset_info

__all__ = ["DATASETS", "DatasetInfo", "get_dataset_info"]

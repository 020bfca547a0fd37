"""Data sets: local files in their published formats, canonical splits, the paper's augmentations."""
from eidsl.data.datasets import DataError, DatasetInfo, load, names

__all__ = ["DataError", "DatasetInfo", "load", "names"]

"""Datasets: folder scanning, CIFAR formats, the decode cache, splits and the device loader."""

from .dataset import Dataset, Decoding, Split, Splitting, channel_stats, load_dataset, read_dataset, split_indices
from .loader import Augmentation, DeviceLoader, Feed, Holding, Sampling, gather_batch
from .preprocess import Preprocess, Preprocessing, to_inputs

__all__ = [
    "Augmentation",
    "Dataset",
    "Decoding",
    "DeviceLoader",
    "Feed",
    "Holding",
    "Preprocess",
    "Preprocessing",
    "Sampling",
    "Split",
    "Splitting",
    "channel_stats",
    "gather_batch",
    "load_dataset",
    "read_dataset",
    "split_indices",
    "to_inputs",
]

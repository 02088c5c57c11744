"""Datasets: folder scanning, CIFAR formats, the decode cache, splits and the device loader."""
from .dataset import Dataset, Split, channel_stats, load_dataset, split_indices
from .loader import DeviceLoader, gather_batch
from .preprocess import Preprocess, to_inputs

__all__ = ["Dataset", "Split", "DeviceLoader", "Preprocess", "channel_stats", "gather_batch", "load_dataset",
           "split_indices", "to_inputs"]

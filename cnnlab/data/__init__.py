"""Datasets: folder scanning, CIFAR formats, the decode cache, splits and the device loader."""
from .dataset import Dataset, Split, channel_stats, load_dataset, split_indices
from .loader import DeviceLoader, gather_batch, to_inputs

__all__ = ["Dataset", "Split", "DeviceLoader", "channel_stats", "gather_batch", "load_dataset",
           "split_indices", "to_inputs"]

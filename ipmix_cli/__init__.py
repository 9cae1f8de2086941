"""ipmix: offline IPMix augmentation into WebDataset shards, streamed back into training."""

__version__ = "0.1.0"

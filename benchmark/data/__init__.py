"""Dataset loaders. Each ``conf/dataset/*.yaml`` names its loader by ``_target_``."""

from benchmark.data.base import Dataset, resolve_root

__all__ = ["Dataset", "resolve_root"]

"""Stand-in for upstream ``dnnlib``: only what rankplug's integration and tests use."""

from dnnlib.util import EasyDict

__all__ = ["EasyDict"]
